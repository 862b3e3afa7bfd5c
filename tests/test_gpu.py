"""CUDA paths (bf16 autocast, channels_last, fused SGD, compile with CUDA graphs): skipped
without a GPU. `.ci/gpu-checks` runs them with the GPU benchmarks on a machine that has one."""

import math

import pytest
import torch

from gradlab import runs
from gradlab.config import load_preset, make_run_spec
from gradlab.train import train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def spec(**overrides):
    recipe = {"batch_size": 64, "eval_every": 20, "checkpoint_every": 40, "record_every": 5}
    return make_run_spec("resnet20", load_preset("quick"), steps=40, device="cuda", recipe=recipe, **overrides)


def test_a_cuda_run_trains_in_bf16_and_records_finite_statistics(tmp_path):
    result = train(spec(), tmp_path, progress=False)
    assert result.state == runs.DONE
    (run,) = runs.load(tmp_path)
    assert run.spec["env"]["device"].startswith("cuda")
    assert run.final("train_err") < 0.9
    layers = run.layers
    grad = layers[layers["stat"] == "grad_norm"]["value"]
    assert len(grad) and grad.map(math.isfinite).all() and (grad > 0).all()


def test_a_compiled_cuda_run_with_cuda_graphs_reports_its_compile_time(tmp_path):
    # 105 steps: the dense recording of the first 100 runs eagerly, then compiled steps follow
    s = make_run_spec("resnet20", load_preset("quick"), steps=105, device="cuda", compile_mode="reduce-overhead",
                      recipe={"batch_size": 64, "eval_every": 35, "checkpoint_every": 105, "record_every": 4})
    result = train(s, tmp_path, progress=False)
    assert result.state == runs.DONE
    (run,) = runs.load(tmp_path)
    assert run.status["compile_s"] > 0
    assert 104 in set(run.layers["step"])  # a recorded step after compiled ones: hooks ran eagerly


def test_on_cuda_the_recorder_defers_its_reductions_and_records_what_the_hooks_record():
    from gradlab.models import build
    from tests.recorder_frames import assert_same, frames

    torch.manual_seed(0)
    model = build("resnet20").cuda().to(memory_format=torch.channels_last)
    x = torch.randn(64, 3, 32, 32, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,), device="cuda")
    out = frames(model, x, y, autocast=True, reduce_at=("auto", "hooks"))
    assert out["auto"][0] == "step" and out["hooks"][0] == "hooks"
    assert_same(out["hooks"][1], out["auto"][1], rtol=2e-3, atol=1e-5)


def test_on_cuda_auto_reduces_in_the_hooks_without_an_activation_sample():
    import gradlab

    # deferring would copy every whole activation until step()
    with gradlab.watch(torch.nn.Linear(2, 2).cuda(), act_sample=None) as rec:
        assert rec.reductions == "hooks"
    with gradlab.watch(torch.nn.Linear(2, 2).cuda()) as rec:
        assert rec.reductions == "step"
