"""The fused kernel on a step's small kept tensors (gradlab.recorder.fused_tensors): the
deferred samples' sums, norms and counts and the kept gradients' norms give the frames the
PyTorch path gives, NaNs included, and a reduction the kernel lacks takes the PyTorch path."""

import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab.recorder import fused_tensors, native
from tests.recorder_frames import assert_same

pytestmark = [pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc)"),
              pytest.mark.usefixtures("fresh_native")]  # (tests/conftest.py)


@pytest.fixture
def fused_calls(monkeypatch):
    """Per fused_tensors function, what each call returned (None: the kernel declined)."""
    calls = {"stats": [], "norms": []}
    for name in calls:
        real = getattr(fused_tensors, name)
        monkeypatch.setattr(fused_tensors, name, lambda *a, _r=real, _n=name: calls[_n].append(_r(*a)) or calls[_n][-1])
    return calls


class Poisoned(nn.Module):
    """Makes one element of its input NaN on the steps listed."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.calls = set(steps), 0

    def forward(self, x):
        self.calls += 1
        if self.calls - 1 in self.steps:
            x = x.clone()
            x[0, 0] = float("nan")
        return x


def mlp(poison=()):
    return nn.Sequential(nn.Linear(6, 16), Poisoned(poison), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16),
                         nn.ReLU(), nn.Linear(16, 4))  # fmt: skip


def record(monkeypatch, on: bool, steps=4, poison=(), seen=None, **kw):
    """The frame of ``steps`` recorded steps (``seen``: a list that gets the second Linear's outputs)."""
    monkeypatch.setenv("GRADLAB_NATIVE", "1" if on else "0")
    native.reset()
    torch.manual_seed(0)
    net = mlp(poison)
    if seen is not None:
        net[2].register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    rec = gradlab.watch(net, every=1, dense_until=0, **kw)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        rec.step()
        opt.step()
    frame = rec.frame()
    rec.stop()
    return frame


@pytest.mark.parametrize("reduce_at", ["step", "mixed"])
def test_same_frames_as_the_pytorch_path(monkeypatch, fused_calls, reduce_at):
    fused = record(monkeypatch, True, reduce_at=reduce_at)
    taken = {name: [c is not None for c in calls] for name, calls in fused_calls.items()}
    assert taken["stats"] and all(taken["stats"]) and taken["norms"] and all(taken["norms"])
    fused_calls["stats"].clear()
    plain = record(monkeypatch, False, reduce_at=reduce_at)
    assert fused_calls["stats"] and not any(c is not None for c in fused_calls["stats"])  # (off: PyTorch's)
    assert_same(plain, fused, rtol=1e-5, atol=1e-6)
    assert {"act_mean", "act_std", "act_zero_frac", "act_grad_norm"} <= set(fused["stat"])


def test_values_against_plain_pytorch(monkeypatch):
    seen = []
    frame = record(monkeypatch, True, steps=1, reduce_at="step", seen=seen)
    h = seen[0]  # the second Linear's output, the ReLU's input
    got = frame[(frame.layer == "2")].set_index("stat")["value"]
    np.testing.assert_allclose(got["act_mean"], h.mean().item(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["act_std"], h.std(unbiased=False).item(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["act_zero_frac"], (h <= 0).float().mean().item(), atol=1e-7)


def test_a_nan_makes_the_count_nan(monkeypatch):
    fused = record(monkeypatch, True, steps=2, poison=(1,), reduce_at="step")
    plain = record(monkeypatch, False, steps=2, poison=(1,), reduce_at="step")
    assert_same(plain, fused, rtol=1e-5, atol=1e-6)  # (NaN where NaN)
    zero = fused[(fused.stat == "act_zero_frac") & (fused.layer == "2")].set_index("step")["value"]
    assert np.isnan(zero[1]) and not np.isnan(zero[0])


def test_a_reduction_the_kernel_lacks_takes_the_pytorch_path(monkeypatch, fused_calls):
    stats = ["act_mean", "act_dead_frac"]
    fused = record(monkeypatch, True, reduce_at="step", stats=stats)
    assert not fused_calls["stats"]  # the step's plan needs DEAD: no fused call at all
    plain = record(monkeypatch, False, reduce_at="step", stats=stats)
    assert_same(plain, fused, rtol=1e-5, atol=1e-6)
    assert "act_dead_frac" in set(fused["stat"])


def test_tensors_that_do_not_qualify_are_declined():
    ok = [torch.randn(3, 4), torch.randn(5)]
    assert fused_tensors.norms(ok) is not None
    torch.testing.assert_close(fused_tensors.norms(ok), torch.stack([t.norm() for t in ok]))
    for bad in (torch.randn(4, 3).t(), torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.bfloat16)):
        assert fused_tensors.norms(ok + [bad]) is None


def conv_net():
    """Outputs of 4 x 8 x 32 x 32 = 32k elements: past the 16k the CPU default keeps for
    step(), so they are reduced in their hooks."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(),
                         nn.Linear(8 * 32 * 32, 4))  # fmt: skip


def record_conv(monkeypatch, on: bool, steps=3, nan=False):
    monkeypatch.setenv("GRADLAB_NATIVE", "1" if on else "0")
    native.reset()
    torch.manual_seed(0)
    net = conv_net()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 4, (4,))
    if nan:
        x[0, 0, 0, 0] = float("nan")
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with gradlab.watch(net, every=1, dense_until=0) as rec:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            rec.step()
            opt.step()
        return rec.frame()


def test_large_outputs_are_reduced_in_their_hooks_by_the_kernel(monkeypatch):
    calls = []
    real = fused_tensors.in_hook
    monkeypatch.setattr(fused_tensors, "in_hook", lambda t, into: calls.append(real(t, into)) or calls[-1])
    fused = record_conv(monkeypatch, True)
    assert calls and all(calls)  # (the convs' 32k-element outputs)
    calls.clear()
    plain = record_conv(monkeypatch, False)
    assert calls and not any(calls)  # off: the kernel declines, PyTorch's reductions run
    assert_same(plain, fused, rtol=1e-5, atol=1e-6)
    assert {"act_mean", "act_std", "act_zero_frac"} <= set(fused[fused.layer == "0"]["stat"])


def test_a_nan_in_a_large_output_makes_its_count_nan(monkeypatch):
    fused = record_conv(monkeypatch, True, steps=1, nan=True)
    plain = record_conv(monkeypatch, False, steps=1, nan=True)
    assert_same(plain, fused, rtol=1e-5, atol=1e-6)
    zero = fused[(fused.stat == "act_zero_frac") & (fused.layer == "0")]["value"]
    assert len(zero) == 1 and np.isnan(zero.iloc[0])


def stats_of(t: torch.Tensor) -> torch.Tensor | None:
    """fused_tensors.in_hook's (sum, norm, count) of t, or None where it declines."""
    out = torch.full((3,), -1.0)
    return out if fused_tensors.in_hook(t, out.data_ptr()) else None


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("numel", [5, 4096 * 9 + 17, 1 << 17])
def test_one_tensor_split_among_threads_gives_pytorchs_values(numel, threads):
    t = torch.randn(numel) + 0.1
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got, again = stats_of(t), stats_of(t)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got, again)  # the runs' totals are added in order: the same bits every time
    torch.testing.assert_close(got[0], t.double().sum().float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got[1], t.double().norm().float(), rtol=1e-6, atol=0)
    assert got[2].item() == pytest.approx((t > 0).sum().item() * torch.finfo(torch.float32).tiny, rel=1e-6)


def test_one_tensor_declines_what_does_not_qualify():
    for bad in (torch.randn(64, 3).t(), torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.bfloat16)):
        assert stats_of(bad) is None


def test_a_value_the_kernel_took_is_shared_with_the_pytorch_path_and_back():
    """One tensor seen by two points: the fused kernel's norm (kept on the host) serves a later
    point reduced by PyTorch (it also wants the dead fraction), and a PyTorch value serves a
    later fused point; the row gets every column right."""
    from gradlab.recorder.in_hook import InHookReductions
    from gradlab.recorder.statistics import DEAD, NORM, SUM
    from gradlab.recorder.taps import SeenOutput

    unset = torch.tensor(float("nan"))
    vals = [unset] * 8
    r = InHookReductions(vals, lambda d: d, None, fused=True)
    h = torch.randn(4, 8, 32, 32)
    e = SeenOutput(h)
    r.output(e, h, ((NORM, 1),), True)  # fused: kept on the host
    r.output(e, h, ((NORM, 2), (DEAD, 3)), True)  # PyTorch path (DEAD), NORM from the host
    g = torch.randn(4, 8, 32, 32)
    eg = SeenOutput(g)
    r.output(eg, g, ((SUM, 4), (DEAD, 5)), True)  # PyTorch: a tensor for SUM
    r.output(eg, g, ((SUM, 6), (NORM, 7)), True)  # fused: SUM from that tensor, NORM new
    row = torch.full((8,), -1.0)
    cols = r.write(row)
    assert sorted(cols) == [1, 2, 7]
    assert vals[1] is unset and vals[2] is unset and vals[3] is not unset and vals[6] is vals[4]
    torch.testing.assert_close(row[1], h.norm(), rtol=1e-5, atol=0)
    assert row[2] == row[1]
    torch.testing.assert_close(row[7], g.norm(), rtol=1e-5, atol=0)
    r.clear()
    assert r.write(torch.zeros(8)) == []
