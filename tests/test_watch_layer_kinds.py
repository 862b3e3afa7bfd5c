"""Layers known by what they are, not by torch's classes (gradlab.recorder.kinds): Hugging Face
GPT-2's Conv1D projections are linear layers with activation and dL/dh statistics, custom
LayerNorm and RMSNorm modules are norm points, each exact against plain PyTorch; a module
gradlab cannot classify is named once, and a model of known layers gets no such line."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab import stat_names as S


def _recorded(model, x, loss=lambda out: out.square().mean()):
    """One recorded step: the frame, what gradlab said, and each module's output and dL/dh
    by plain PyTorch (forward hooks registered before gradlab's)."""
    outputs = {}

    def keep(name):
        def hook(module, args, out):
            if isinstance(out, torch.Tensor) and out.requires_grad:
                out.retain_grad()
                outputs[name] = out
        return hook

    for name, module in model.named_modules():
        if name:
            module.register_forward_hook(keep(name))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gradlab.watch(model, every=1, act_sample=None) as rec:
            loss(model(x)).backward()
            rec.step()
    lines = [str(w.message) for w in caught if str(w.message).startswith("gradlab:")]
    return rec.frame(), lines, outputs


def _stat(df, stat):
    return df[df.stat == stat].set_index("layer")["value"]


def _exact(df, outputs, names):
    for name in names:
        h = outputs[name]
        assert _stat(df, S.ACT_MEAN)[name] == pytest.approx(float(h.detach().double().mean()), rel=1e-5, abs=1e-7), name
        assert _stat(df, S.ACT_GRAD_NORM)[name] == pytest.approx(float(h.grad.double().norm()), rel=1e-5), name


def test_gpt2_conv1d_projections_are_linear_layers_with_activation_statistics():
    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=40, n_positions=16, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).train()
    tokens = torch.randint(0, 40, (3, 8))
    df, _, outputs = _recorded(model, tokens, loss=lambda out: out.logits.square().mean())
    conv1d = [n for n, m in model.named_modules() if isinstance(m, Conv1D)]
    assert len(conv1d) == 8
    kinds = df.drop_duplicates("layer").set_index("layer")["kind"]
    assert all(kinds[n] == "fc" for n in conv1d) and all(kinds[f"{n}.weight"] == "fc" for n in conv1d)
    _exact(df, outputs, conv1d)
    grads = _stat(df, S.ACT_GRAD_NORM)
    assert len(grads) > 10  # not only lm_head: every projection and LayerNorm along depth


class LayerNorm(nn.Module):
    """nanoGPT's: a module of its own calling F.layer_norm."""

    def __init__(self, width):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width) * 1.5)
        self.bias = nn.Parameter(torch.full((width,), 0.2))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class RMSNorm(nn.Module):
    """LLaMA-style, by hand."""

    def __init__(self, width, eps=1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LayerScale(nn.Module):
    """A per-feature weight that does not normalize: no norm."""

    def __init__(self, width):
        super().__init__()
        self.weight = nn.Parameter(torch.full((width,), 0.1))

    def forward(self, x):
        return x * self.weight


class Net(nn.Module):
    def __init__(self, extras: bool):
        super().__init__()
        self.inp = nn.Linear(6, 12)
        self.ln = LayerNorm(12)
        self.rms = RMSNorm(12)
        self.scale = LayerScale(12) if extras else nn.Identity()
        self.rnn = nn.GRU(12, 12, batch_first=True) if extras else None
        self.out = nn.Linear(12, 3)

    def forward(self, x):
        h = self.scale(self.rms(self.ln(self.inp(x))))
        if self.rnn is not None:
            h = self.rnn(h.unsqueeze(1))[0][:, 0]
        return self.out(h)


def test_custom_layernorm_and_rmsnorm_modules_are_norm_points_with_exact_statistics():
    torch.manual_seed(0)
    model = Net(extras=False)
    df, lines, outputs = _recorded(model, torch.randn(10, 6) * 3)
    kinds = df.drop_duplicates("layer").set_index("layer")["kind"]
    assert kinds["ln"] == kinds["rms"] == kinds["ln.weight"] == kinds["rms.weight"] == "norm"
    _exact(df, outputs, ["inp", "ln", "rms", "out"])
    indices = df.drop_duplicates("layer").set_index("layer")["index"]
    assert indices["inp"] < indices["ln"] < indices["rms"] < indices["out"] and indices["ln.weight"] == indices["ln"]
    assert lines == []  # every module is a layer gradlab knows: nothing to say


def test_modules_gradlab_cannot_classify_are_named_once():
    torch.manual_seed(0)
    df, lines, _ = _recorded(Net(extras=True), torch.randn(10, 6))
    (line,) = lines
    assert "scale (LayerScale), rnn (GRU) hold parameters but are no layer gradlab knows" in line
    assert "probe_points()" in line
    kinds = df.drop_duplicates("layer").set_index("layer")["kind"]
    assert kinds["scale.weight"] == "other" and "scale" not in kinds and kinds["rms"] == "norm"
