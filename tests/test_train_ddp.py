"""One run data-parallel (real torchrun, gloo, 2 CPU processes) is the single-process run.

The comparison is per step to float tolerance: the all-reduce sums in another order, and on
this tiny problem float-level differences stay small over the 6 steps (over tens of steps
at a high learning rate any change, even the thread count, grows through ReLU kinks).
"""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.distributed as dist

from gradlab import stat_names as S
from gradlab.config import load_preset, make_run_spec
from gradlab.data import Augment, Dataset
from gradlab.errors import ConfigError
from gradlab.data.loader import DeviceLoader
from gradlab.models import build
from gradlab.train import train

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

# batch 32 over 2 ranks: each rank's shard holds the recorder's 16 activation-sample examples
CONFIG = """
preset = "tiny"
[data]
name = "synthetic"
synthetic_shape = [3, 8, 8]
synthetic_size = 128
num_classes = 4
[recipe]
steps = 6
batch_size = 32
lr = 0.05
milestones = [4]
eval_every = 3
checkpoint_every = 3
record_every = 1
"""
RUN = "tiny-synthetic/resnet20-s0"
ARGS = ["train", "resnet20", "--device", "cpu", "--wandb", "disabled"]


def gradlab_cmd(*launcher: str) -> list[str]:
    return [sys.executable, *launcher, "-m", "gradlab"]


def run(cmd: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    (d / "tiny.toml").write_text(CONFIG)
    spec = make_run_spec("resnet20", load_preset(path=d / "tiny.toml"), device="cpu")
    result = train(spec, d / "single", progress=False)
    assert result.state == "done"
    return d


def assert_same_run(single, parallel):
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (single, parallel))
    assert a["step"] == b["step"] == 6
    assert a["model"].keys() == b["model"].keys()
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)

    ma, mb = (pd.read_parquet(d / "metrics.parquet") for d in (single, parallel))
    assert ma.step.tolist() == mb.step.tolist() == [0, 3, 6]
    for col in ("train_loss", "lr"):
        pd.testing.assert_series_equal(mb[col], ma[col], rtol=1e-4)
    for col in ("train_err", "test_err"):  # counts over the global batch / the whole test set
        assert mb[col].fillna(-1).tolist() == ma[col].fillna(-1).tolist()

    la, lb = (pd.read_parquet(d / "layers.parquet") for d in (single, parallel))
    keys = ["step", "layer", "index", "kind", "stat"]
    assert la[keys].equals(lb[keys])  # the same rows, none missing, none duplicated
    # A conv that feeds a BatchNorm has its mean and std from the BatchNorm's statistics of the
    # (local) batch: 32 examples in the single run, rank 0's 16 in the parallel one. In the
    # single run the BatchNorms' own outputs (and the branch_out after bn2) get theirs from
    # gamma, beta and those statistics, while CpuSyncBatchNorm's outputs are measured on
    # their 16-example sample; the branch ratio compares that branch with the sampled input. Those stds and ratios agree as
    # estimates (within 10%); every other point's statistics come from the first 16
    # examples, the same in both runs.
    points = build("resnet20").probe_points()
    whole = la.layer.isin([p.name for p in points if p.bn_next or p.kind in ("bn", "branch")]).to_numpy()
    assert whole.any()

    def compare(stat, estimate, **tol):
        rows = (la.stat == stat).to_numpy()
        est = (whole & (stat in (S.ACT_STD, S.ACT_MEAN))) | (stat == S.BRANCH_RATIO)
        rows = rows & (est if estimate else ~est)
        assert rows.any(), (stat, estimate)
        pd.testing.assert_series_equal(lb.value[rows], la.value[rows], obj=stat, **tol)

    for stat in (S.GRAD_NORM, S.WEIGHT_NORM, S.ACT_GRAD_NORM, S.ACT_STD):
        compare(stat, False, rtol=1e-4, atol=1e-7)
    compare(S.ACT_MEAN, False, atol=1e-5)
    for stat in (S.ACT_STD, S.BRANCH_RATIO):  # (means near 0 have no such relative agreement)
        compare(stat, True, rtol=0.1)

    assert sorted(p.name for p in parallel.iterdir()) == sorted(p.name for p in single.iterdir())
    assert json.loads((parallel / "status.json").read_text())["state"] == "done"
    spec_a, spec_b = (json.loads((d / "spec.json").read_text()) for d in (single, parallel))
    assert spec_b["run"] == spec_a["run"]  # the same run: world size is where it ran, like the device
    assert "distributed" not in spec_a["env"]
    return spec_b


@pytest.mark.slow
def test_torchrun_two_processes_match_the_single_process_run(work):
    p = run(gradlab_cmd("-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2")
            + ARGS + ["--config", "tiny.toml", "--runs-dir", "torchrun"], work)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("done: resnet20-s0 at step 6") == 1  # only rank 0 reports
    spec = assert_same_run(work / "single" / RUN, work / "torchrun" / RUN)
    assert spec["env"]["distributed"] == {"world_size": 2, "backend": "gloo", "batch_per_rank": 16,
                                          "batchnorm": "CpuSyncBatchNorm"}


@pytest.mark.slow
def test_nproc_relaunches_itself_through_torchrun(work):
    p = run(gradlab_cmd() + ARGS + ["--config", "tiny.toml", "--runs-dir", "nproc", "--nproc", "2"], work)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "over 2 processes" in p.stderr
    assert_same_run(work / "single" / RUN, work / "nproc" / RUN)


def test_a_global_batch_that_does_not_split_is_a_clear_error(work):
    p = run(gradlab_cmd() + ARGS + ["--config", "tiny.toml", "--runs-dir", "odd", "--nproc", "2",
                                    "--batch-size", "31"], work)
    assert p.returncode == 1
    assert "global batch of 31 cannot be split evenly over 2 processes" in p.stderr
    assert "--batch-size" in p.stderr and "Traceback" not in p.stderr
    assert not (work / "odd").exists()


def test_rank_shards_are_contiguous_parts_of_the_single_process_batch():
    g = torch.Generator().manual_seed(0)
    ds = Dataset("t", torch.randint(0, 256, (40, 3, 6, 6), generator=g, dtype=torch.uint8),
                 torch.arange(40), torch.zeros(4, 3, 6, 6, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
                 40, Augment(pad=2, flip=True))
    whole = DeviceLoader(ds, 12, seed=3, device=torch.device("cpu"))
    shards = [DeviceLoader(ds, 12, seed=3, device=torch.device("cpu"), rank=r, world_size=3) for r in range(3)]
    for step in (0, 2, 5):  # 3 steps per epoch: two epochs, each with its own order and crops
        x, y = whole.batch(step)
        parts = [s.batch(step) for s in shards]
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
        assert torch.equal(parts[0][1], y[:4])
    with pytest.raises(ConfigError, match="multiple of 5"):
        DeviceLoader(ds, 12, seed=3, device=torch.device("cpu"), rank=0, world_size=5)


@pytest.mark.slow
def test_resuming_from_a_checkpoint_between_evaluations_keeps_the_global_running_sums(work):
    """The checkpoint at step 3 lies inside the 0-6 evaluation interval: the resumed run must
    carry the sums of all ranks, counted once, into the step-6 training loss."""
    (work / "mid.toml").write_text(CONFIG.replace("eval_every = 3", "eval_every = 6")
                                   .replace("checkpoint_every = 3", "checkpoint_every = 3\nkeep_checkpoints = 2"))
    cmd = gradlab_cmd("-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2") + ARGS + [
        "--config", "mid.toml", "--runs-dir", "mid"]
    p = run(cmd, work)
    assert p.returncode == 0, p.stderr[-3000:]
    d = work / "mid" / "tiny-synthetic" / "resnet20-s0"
    whole = pd.read_parquet(d / "metrics.parquet")
    # as if stopped right after the step-3 checkpoint
    (d / "checkpoint.pt").unlink()
    (d / "checkpoint-00000003.pt").rename(d / "checkpoint.pt")
    status = json.loads((d / "status.json").read_text())
    (d / "status.json").write_text(json.dumps({**status, "state": "interrupted", "step": 3}))
    p = run(cmd, work)
    assert p.returncode == 0, p.stderr[-3000:]
    resumed = pd.read_parquet(d / "metrics.parquet")
    assert resumed.step.tolist() == whole.step.tolist() == [0, 6]
    pd.testing.assert_series_equal(resumed["train_loss"], whole["train_loss"], rtol=1e-5)
    assert resumed["train_err"].fillna(-1).tolist() == whole["train_err"].fillna(-1).tolist()


@pytest.mark.slow
def test_stochastic_depth_drops_the_same_blocks_on_every_rank(work):
    spec = make_run_spec("resnet20", load_preset(path=work / "tiny.toml"), device="cpu",
                         model_options={"drop_path": 0.5})  # fmt: skip
    single = train(spec, work / "single-dp", progress=False).run_dir
    p = run(gradlab_cmd() + ARGS + ["--config", "tiny.toml", "--runs-dir", "nproc-dp", "--nproc", "2",
                                    "--drop-path", "0.5"], work)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    parallel = work / "nproc-dp" / single.relative_to(work / "single-dp")
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in (single, parallel))
    for k, v in a.items():  # ranks that dropped different blocks would neither agree nor match this
        torch.testing.assert_close(b[k], v, rtol=1e-4, atol=1e-6, msg=k)
    kept = torch.load(work / "single" / RUN / "checkpoint.pt", weights_only=True)["model"]
    assert not all(torch.equal(kept[k], v) for k, v in a.items())  # and blocks were dropped
