"""Activation statistics come from the first `act_sample` examples; gradients from all."""

import torch
import torch.nn as nn

import gradlab


def test_activation_stats_on_the_sample_and_gradient_norm_on_the_whole_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    x = torch.randn(64, 4)
    with gradlab.watch(model, every=1, act_sample=32) as rec:
        out = model(x)
        (out.pow(2).sum() / 2).backward()  # dL/dout = out
        rec.step()
    df = rec.frame().set_index(["layer", "stat"])["value"]
    h = out.detach()
    torch.testing.assert_close(df[("0", "act_mean")], h[:32].mean().item(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(df[("0", "act_std")], h[:32].std(unbiased=False).item(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(df[("0", "act_grad_norm")], h.norm().item(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(df[("0.weight", "grad_norm")], (h.T @ x).norm().item(), rtol=1e-5, atol=1e-6)


def test_act_sample_none_uses_the_whole_batch():
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    x = torch.randn(64, 4)
    with gradlab.watch(model, every=1, act_sample=None) as rec:
        out = model(x)
        out.sum().backward()
        rec.step()
    df = rec.frame().set_index(["layer", "stat"])["value"]
    torch.testing.assert_close(df[("0", "act_mean")], out.detach().mean().item(), rtol=1e-5, atol=1e-7)
