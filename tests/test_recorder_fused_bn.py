"""The BatchNorm derivations in the fused CPU kernel (gradlab.recorder.fused_bn): the frames
of the PyTorch derivations (GRADLAB_NATIVE=0), micro-batches included, and the values of
the tensors themselves; vectors that do not qualify take the PyTorch path."""

import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab.recorder import fused_bn, native
from tests.recorder_frames import assert_same

pytestmark = [pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc)"),
              pytest.mark.usefixtures("fresh_native")]  # (tests/conftest.py)

KINDS = ("input_totals", "output_totals", "grad_totals")


@pytest.fixture
def fused_calls(monkeypatch):
    """Per fused_bn function, whether each call was taken (False: declined)."""
    calls = {name: [] for name in KINDS}
    for name in KINDS:
        real = getattr(fused_bn, name)

        def spy(*a, _r=real, _n=name):
            out = _r(*a)
            calls[_n].append(out is not None)
            return out

        monkeypatch.setattr(fused_bn, name, spy)
    return calls


def bn_net(dtype=torch.float32):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                        nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 8 * 8, 3)).to(dtype)  # fmt: skip
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.normal_()
    return net


def record(monkeypatch, on: bool, micro=1, steps=3, dtype=torch.float32, seen=None):
    """The frame of ``steps`` steps, each of ``micro`` forward/backward passes."""
    monkeypatch.setenv("GRADLAB_NATIVE", "1" if on else "0")
    native.reset()
    net = bn_net(dtype)
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    with gradlab.watch(net, every=1, dense_until=0) as rec:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            for _ in range(micro):
                x = torch.randn(4, 3, 8, 8, generator=g, dtype=dtype)
                if seen is not None:
                    seen.append(x)
                F.cross_entropy(net(x), torch.arange(4) % 3).backward()
            rec.step()
            opt.step()
        return rec.frame()


@pytest.mark.parametrize("micro", [1, 2])
def test_same_frames_as_the_pytorch_derivations(monkeypatch, fused_calls, micro):
    fused = record(monkeypatch, True, micro=micro)
    assert all(fused_calls[k] and all(fused_calls[k]) for k in KINDS), fused_calls
    for k in KINDS:
        fused_calls[k].clear()
    plain = record(monkeypatch, False, micro=micro)
    assert not any(any(c) for c in fused_calls.values())  # (off: the kernels decline)
    assert_same(plain, fused, rtol=1e-5, atol=1e-6)
    stats = set(fused[fused.layer == "0"]["stat"])  # the conv measured from its BatchNorm
    assert {"act_mean", "act_std", "act_grad_norm"} <= stats


def test_values_are_the_tensors_own(monkeypatch):
    seen = []
    frame = record(monkeypatch, True, steps=1, seen=seen)
    x = seen[0]
    torch.manual_seed(0)
    fresh = bn_net()  # the weights before the step
    h = fresh[0](x).detach().requires_grad_()
    y = fresh[1](h)
    y.retain_grad()
    F.cross_entropy(nn.Sequential(*fresh[2:])(y), torch.arange(4) % 3).backward()
    got = frame.set_index(["layer", "stat"])["value"]
    np.testing.assert_allclose(got["0", "act_mean"], h.mean().item(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["0", "act_std"], h.std(unbiased=False).item(), rtol=1e-4)
    np.testing.assert_allclose(got["1", "act_mean"], y.mean().item(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["1", "act_std"], y.std(unbiased=False).item(), rtol=1e-4)
    np.testing.assert_allclose(got["0", "act_grad_norm"], h.grad.norm().item(), rtol=1e-4)
    np.testing.assert_allclose(got["1", "act_grad_norm"], y.grad.norm().item(), rtol=1e-5)


def test_float64_vectors_take_the_pytorch_path(monkeypatch, fused_calls):
    fused = record(monkeypatch, True, dtype=torch.float64)
    assert fused_calls["input_totals"] and not any(fused_calls["input_totals"])
    plain = record(monkeypatch, False, dtype=torch.float64)
    assert_same(plain, fused, rtol=1e-6, atol=1e-8)


def test_scatter_adds_a_column_named_twice_then_roots():
    row = torch.full((6,), -1.0)
    scatter = fused_bn.Scatter([(0, 2, False), (1, 3, True), (3, 3, True), (2, 5, True)])
    assert scatter.put(np.array([1.5, 9.0, 4.0, 16.0]), row) == [2, 3, 5]
    assert row.tolist() == [-1.0, -1.0, 1.5, 5.0, -1.0, 2.0]  # sqrt(9 + 16) = 5, sqrt(4) = 2
