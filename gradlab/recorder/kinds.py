"""What kind of layer a module is, for models without ``probe_points()``.

torch's own classes first: Conv*/ConvTranspose* ("conv"), Linear/Bilinear ("fc"),
BatchNorm* ("bn"), InstanceNorm*/LayerNorm/GroupNorm/RMSNorm ("norm"). Then other modules
by what they are rather than what they are called:

* a module with a weight matrix (a 2-D ``weight`` of its own, not an embedding's lookup
  table) is a linear layer, "fc": Hugging Face GPT-2's ``Conv1D`` (``x @ W + b``) and its like;
* a module with a per-feature weight (a 1-D ``weight`` of its own, no submodules) that
  normalizes is a "norm": given a few rows of wide, shifted values, its output with the
  weight and bias taken out has a root mean square of 1 in every row (nanoGPT's LayerNorm
  calling ``F.layer_norm``, LLaMA-style RMSNorm written by hand). The test runs on a copy,
  once per module, so the module's buffers are never touched.

Modules that hold parameters and are none of these (an LSTM, a module of loose parameters)
have parameter statistics only; :func:`unclassified` names them, bar the lookup tables and
attention blocks whose parameters the forward order places (gradlab.recorder.forward_order).
"""

from __future__ import annotations

import copy
import weakref

import torch
import torch.nn as nn

from gradlab.models.probe_points import BN, CONV, FC, NORM
from gradlab.recorder.bn_stats import is_batchnorm

__all__ = ["module_kind", "normalizes", "unclassified"]

_CONV_TYPES = (nn.modules.conv._ConvNd,)
_FC_TYPES = (nn.Linear, nn.Bilinear)
_NORM_TYPES = tuple(
    t
    for t in (
        nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*
        nn.LayerNorm,
        nn.GroupNorm,
        getattr(nn, "RMSNorm", None),
    )
    if t is not None
)
_LOOKUP_TYPES = (nn.Embedding, nn.EmbeddingBag)  # a weight matrix that is a table, not a layer
_PLACED_TYPES = _LOOKUP_TYPES + (nn.MultiheadAttention,)  # parameters without outputs of their own to watch

_NORMALIZES: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()
_ROWS, _WIDE, _SHIFT, _TOLERANCE = 4, 5.0, 3.0, 0.05


def module_kind(module: nn.Module) -> str | None:
    """"conv" | "fc" | "bn" | "norm" for the layers named in the module docstring, else None."""
    if isinstance(module, _CONV_TYPES):
        return CONV
    if isinstance(module, _FC_TYPES):
        return FC
    if is_batchnorm(module):
        return BN
    if isinstance(module, _NORM_TYPES):
        return NORM
    weight = module._parameters.get("weight")
    if not isinstance(weight, torch.Tensor) or isinstance(module, _LOOKUP_TYPES):
        return None
    if weight.dim() == 2:
        return FC
    if weight.dim() == 1 and normalizes(module):
        return NORM
    return None


def normalizes(module: nn.Module) -> bool:
    """Whether ``module``, whose ``weight`` is 1-D, normalizes its input along that weight
    (see the module docstring; remembered per module)."""
    known = _NORMALIZES.get(module)
    if known is None:
        known = _NORMALIZES[module] = _probe(module)
    return known


def _probe(module: nn.Module) -> bool:
    weight = module.weight.detach()
    width = weight.numel()
    if width < 2 or next(module.children(), None) is not None or not weight.is_floating_point():
        return False
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(_ROWS, width, generator=generator) * _WIDE + _SHIFT
    probe = copy.deepcopy(module) if next(module.buffers(), None) is not None else module
    try:
        with torch.no_grad():
            y = probe.forward(x.to(weight.device, weight.dtype))
    except Exception:  # a module that takes other inputs is no norm of this kind
        return False
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        return False
    bias = getattr(module, "bias", None)
    bias = bias.detach().float() if isinstance(bias, torch.Tensor) and bias.shape == weight.shape else 0.0
    scale = weight.float()
    used = scale.abs() > 1e-6
    if int(used.sum()) < 2:
        return False
    z = ((y.float() - bias) / torch.where(used, scale, 1.0))[:, used]
    rms = z.square().mean(-1).sqrt()
    return bool(((rms - 1).abs() < _TOLERANCE).all())


def unclassified(inner: nn.Module, paths: list[str]) -> list[str]:
    """"name (Class)" of each module among ``paths`` (those holding parameters no probe
    point owns) that gradlab cannot classify: not the model itself, a lookup table or an
    attention block, and no layer :func:`module_kind` knows."""
    named = dict(inner.named_modules())
    out = []
    for path in dict.fromkeys(paths):
        module = named.get(path)
        if path and module is not None and not isinstance(module, _PLACED_TYPES) and module_kind(module) is None:
            out.append(f"{path} ({type(module).__name__})")
    return out
