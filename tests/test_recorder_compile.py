"""Recorder on torch.compile'd models: it runs and matches eager within float tolerance.

The fast test uses the "aot_eager" backend (Dynamo tracing and AOT autograd, no code
generation); the inductor test compiles C++ kernels and is marked slow.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab import stat_names as S
from gradlab.errors import RecorderError
from tests.recorder_frames import assert_same

pytestmark = pytest.mark.skipif(not hasattr(torch, "compile"), reason="needs torch.compile")


def make_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 4))


def record(model, net, steps=5, watched=None):
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(16, 8, generator=g) for _ in range(steps)]
    y = torch.randint(0, 4, (16,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradlab.watch(net if watched is None else watched, every=2, dense_until=0) as rec:
        for x in xs:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            rec.step()
            opt.step()
        return rec.frame()


def check(backend, watch_original=False):
    torch._dynamo.reset()
    model = make_mlp()
    eager = record(model, model)
    model = make_mlp()
    compiled = record(model, torch.compile(model, backend=backend), watched=model if watch_original else None)
    assert sorted(set(compiled.step)) == [0, 2, 4]
    assert set(compiled.stat) == set(S.DEFAULT_STATS) - {S.BRANCH_RATIO}
    assert not compiled.layer.str.contains("_orig_mod").any()
    assert_same(eager, compiled)


@pytest.mark.parametrize("watch_original", [False, True], ids=["watch-compiled", "watch-original"])
def test_compiled_tiny_mlp_matches_eager(watch_original):
    check("aot_eager", watch_original)


@pytest.mark.slow
def test_compiled_tiny_mlp_matches_eager_inductor():
    check("inductor")


def test_watching_the_compiled_and_the_original_module_conflicts():
    model = make_mlp()
    compiled = torch.compile(model, backend="eager")
    rec = gradlab.watch(compiled)
    with pytest.raises(RecorderError):
        gradlab.watch(model)
    rec.stop()


def test_a_recorded_step_after_compiled_ones_runs_eagerly_and_gets_activation_statistics():
    """Compiled code traced without hooks skips hooks added later; a recorded step therefore
    runs eagerly (gradlab.recorder.compiled), and the compiled code is used again after it."""
    torch._dynamo.reset()
    model = make_mlp()
    net = torch.compile(model, backend="aot_eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    with gradlab.watch(model, every=2, dense_until=0) as rec:
        rec.set_step(1)  # the first forward is unrecorded: compiled with no hook in sight
        for _ in range(4):  # steps 1, 2 (recorded), 3, 4 (recorded)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            rec.step()
            opt.step()
        frame = rec.frame()
    assert sorted(set(frame.step)) == [2, 4]
    for step in (2, 4):
        assert set(frame[frame.step == step].stat) >= {S.ACT_MEAN, S.ACT_STD, S.ACT_GRAD_NORM}
    assert torch.compiler.is_compiling() is False


def test_the_stance_is_restored_when_the_hooks_come_off():
    from torch._dynamo import eval_frame

    from gradlab.recorder import compiled

    if not compiled.STANCES:
        pytest.skip("this PyTorch has no compiler stances")
    before = eval_frame._stance.stance
    rec = gradlab.watch(make_mlp(), every=2)  # step 0 is recorded: hooks on
    assert eval_frame._stance.stance == "force_eager"
    rec.stop()
    assert eval_frame._stance.stance == before
