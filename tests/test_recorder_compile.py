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
