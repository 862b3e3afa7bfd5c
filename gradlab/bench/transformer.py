"""A small pre-LN transformer for benchmarks: many small ops, about a hundred watched
parameters and probe points (Xiong et al. 2020's pre-LN layout, as GPT-2's).

    model, batch = tiny_transformer()           # 12 layers, width 32, 2 heads
    loss = model(batch[0]).square().mean()
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["TinyTransformer", "tiny_transformer"]

VOCAB = 64


class TinyTransformer(nn.Module):
    """Token embedding, ``depth`` pre-LN encoder layers with a final LayerNorm, a linear head."""

    def __init__(self, depth: int = 12, width: int = 32, heads: int = 2, classes: int = 10):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def tiny_transformer(depth: int = 12, width: int = 32, heads: int = 2, batch: int = 4, tokens: int = 8,
                     seed: int = 0) -> tuple[TinyTransformer, tuple[torch.Tensor, torch.Tensor]]:
    """The model and one batch of token ids and labels (``batch`` sequences of ``tokens``)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TinyTransformer(depth, width, heads)
    x = torch.randint(0, VOCAB, (batch, tokens), generator=g)
    return model, (x, x[:, 0] % 10)
