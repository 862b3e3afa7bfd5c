"""Runs get killed: by SIGKILL, Ctrl-C, SIGTERM. None may lose a run or bend a curve."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from gradlab import runs
from gradlab.config import load_preset, make_run_spec
from gradlab.errors import RunLockedError
from gradlab.file_io import write_json
from gradlab.train import train
from gradlab.run_lock import LOCK

ARGS = ["resnet8", "--preset", "quick", "--steps", "60", "--batch-size", "32", "--device", "cpu"]
TIMING = ["images_per_s", "time_s"]


def spec():
    # what ARGS resolve to, plus the cadence the subprocess gets from its --config file
    return make_run_spec("resnet8", load_preset("quick"), steps=60, device="cpu",
                         recipe={"batch_size": 32, "eval_every": 10, "checkpoint_every": 10})


def config_file(tmp_path):
    """The quick preset with a checkpoint every 10 of 60 steps (as --steps 60 scales it)."""
    text = open(load_preset("quick").source).read()
    text = text.replace("eval_every = 25", "eval_every = 50").replace("checkpoint_every = 100", "checkpoint_every = 50")
    path = tmp_path / "cadence.toml"
    path.write_text(text)
    return path


def start(runs_dir, cfg):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gradlab", "train", *ARGS[:1], "--config", str(cfg), *ARGS[3:],
           "--runs-dir", str(runs_dir), "--no-progress"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(run_dir, step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if json.loads((run_dir / runs.STATUS).read_text())["step"] >= step:
                return
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"run did not reach step {step}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in this process."""
    root = tmp_path_factory.mktemp("reference")
    cfg = config_file(root)
    s = make_run_spec("resnet8", load_preset(path=cfg), steps=60, device="cpu", recipe={"batch_size": 32})
    result = train(s, root, progress=False)
    return s, result.run_dir


def same_run(a, b):
    pd.testing.assert_frame_equal(pd.read_parquet(a / runs.METRICS).drop(columns=TIMING),
                                  pd.read_parquet(b / runs.METRICS).drop(columns=TIMING))
    pd.testing.assert_frame_equal(pd.read_parquet(a / runs.LAYERS), pd.read_parquet(b / runs.LAYERS))
    ma = torch.load(a / runs.CHECKPOINT, weights_only=True)["model"]
    mb = torch.load(b / runs.CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_step", [0, 5, 10, 35])
@pytest.mark.slow
def test_sigkill_then_resume_gives_exactly_the_uninterrupted_run(tmp_path, reference, kill_after_step):
    s, ref_dir = reference
    cfg = config_file(tmp_path)
    proc = start(tmp_path / "runs", cfg)
    run_dir = tmp_path / "runs" / s.experiment / s.name
    wait_for_step(run_dir, kill_after_step, proc)
    time.sleep(0.3 if kill_after_step else 0)  # somewhere between checkpoints
    proc.kill()
    proc.wait()
    resumed = train(s, tmp_path / "runs", progress=False)  # rerunning the same command
    assert resumed.state == runs.DONE
    same_run(ref_dir, run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.slow
def test_sigint_and_sigterm_checkpoint_mark_interrupted_and_exit_cleanly(tmp_path, reference, sig, code):
    s, ref_dir = reference
    proc = start(tmp_path / "runs", config_file(tmp_path))
    run_dir = tmp_path / "runs" / s.experiment / s.name
    wait_for_step(run_dir, 5, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "rerun the same command to resume" in err
    assert "stopped: " in err and "Error" not in err  # a clean stop is not an error
    status = json.loads((run_dir / runs.STATUS).read_text())
    assert status["state"] == "interrupted"
    assert torch.load(run_dir / runs.CHECKPOINT, weights_only=True)["step"] == status["step"]
    assert not (run_dir / LOCK).exists()
    train(s, tmp_path / "runs", progress=False)
    same_run(ref_dir, run_dir)


def test_a_live_lock_refuses_and_a_stale_lock_is_taken_over(tmp_path):
    s = spec()
    run_dir = tmp_path / s.experiment / s.name
    run_dir.mkdir(parents=True)
    lock = run_dir / LOCK
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": "now"}))
    with pytest.raises(RunLockedError, match=f"being trained by pid {os.getppid()}"):
        train(s, tmp_path, progress=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    assert train(s, tmp_path, progress=False).state == runs.DONE
    assert not lock.exists()


def test_keep_last_k_checkpoints_and_resume_past_a_damaged_one(tmp_path, caplog):
    from tests.damage import truncate_file
    from gradlab.callbacks import Callback
    from gradlab.checkpoint import archived

    class StopAt(Callback):
        def on_eval(self, run_dir, row):
            if row["step"] == 40:
                raise KeyboardInterrupt

    s = make_run_spec("resnet8", load_preset("quick"), steps=60, device="cpu",
                      recipe={"batch_size": 32, "eval_every": 10, "checkpoint_every": 10, "keep_checkpoints": 3})
    full = train(s, tmp_path / "a", progress=False)
    assert [p.name for p in archived(full.run_dir)] == ["checkpoint-00000040.pt", "checkpoint-00000050.pt"]
    with pytest.raises(KeyboardInterrupt):
        train(s, tmp_path / "b", progress=False, callbacks=[StopAt()])
    run_dir = tmp_path / "b" / s.experiment / s.name
    truncate_file(run_dir / runs.CHECKPOINT)  # the step-30 checkpoint, as a full disk would leave it
    with caplog.at_level("WARNING"):
        assert train(s, tmp_path / "b", progress=False).state == runs.DONE
    assert "warning: " in caplog.text and "resuming from the older checkpoint-00000020.pt" in caplog.text
    assert "delete" not in caplog.text  # it resumes: no advice to start over
    same_run(full.run_dir, run_dir)


def test_a_resumed_run_says_from_which_step(tmp_path):
    from click.testing import CliRunner

    from gradlab.callbacks import Callback
    from gradlab.cli.main import cli

    class StopAt(Callback):
        def on_eval(self, run_dir, row):
            if row["step"] == 10:
                raise KeyboardInterrupt

    s = make_run_spec("resnet8", load_preset("quick"), steps=20)
    with pytest.raises(KeyboardInterrupt):
        train(s, tmp_path, progress=False, callbacks=[StopAt()])
    step = torch.load(tmp_path / s.experiment / s.name / runs.CHECKPOINT, weights_only=True)["step"]
    out = CliRunner().invoke(cli, ["train", "resnet8", "--preset", "quick", "--steps", "20", "--runs-dir",
                                   str(tmp_path), "--wandb", "disabled"])
    assert out.exit_code == 0, out.output
    assert f"resnet8-s0: resuming from step {step} of 20" in out.output and 0 < step < 20


def test_unreadable_checkpoints_name_what_to_delete(tmp_path):
    from tests.damage import truncate_file
    from gradlab.errors import RunDirError

    s = make_run_spec("resnet8", load_preset("quick"), steps=20)
    result = train(s, tmp_path, progress=False)
    status = json.loads((result.run_dir / runs.STATUS).read_text())
    write_json(result.run_dir / runs.STATUS, {**status, "state": runs.INTERRUPTED})
    truncate_file(result.run_dir / runs.CHECKPOINT)
    with pytest.raises(RunDirError, match="cannot be read .*; to restart the run from step 0, delete it in"):
        train(s, tmp_path, progress=False)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_resume_at_another_thread_count_is_warned_about(tmp_path, caplog, threads):
    from gradlab.callbacks import Callback

    class StopAt(Callback):
        def on_eval(self, run_dir, row):
            if row["step"] == 10:
                raise KeyboardInterrupt

    s = make_run_spec("resnet8", load_preset("quick"), steps=20, device="cpu")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with pytest.raises(KeyboardInterrupt):
            train(s, tmp_path, progress=False, callbacks=[StopAt()])
        torch.set_num_threads(threads)
        with caplog.at_level("WARNING"):
            assert train(s, tmp_path, progress=False).state == runs.DONE
    finally:
        torch.set_num_threads(before)
    warned = "with 1 CPU thread(s) and resumes with 2" in caplog.text and "OMP_NUM_THREADS=1" in caplog.text
    assert warned == (threads == 2)


SLOW_STEPS = """
preset = "slow-steps"
[data]
name = "synthetic"
synthetic_shape = [3, 32, 32]
synthetic_size = 1024
[recipe]
steps = 50
batch_size = 256
milestones = []
eval_every = 50
checkpoint_every = 2
"""


@pytest.mark.slow
def test_a_second_sigterm_ends_the_step_at_once(tmp_path):
    """The first SIGTERM waits for the end of the step (seconds here: ResNet-110 at batch
    256); a second one, moments later, stops mid-step without writing a checkpoint."""
    cfg = tmp_path / "slow.toml"
    cfg.write_text(SLOW_STEPS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gradlab", "train", "resnet110", "--config", str(cfg), "--device",
                             "cpu", "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--wandb", "disabled"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    run_dir = tmp_path / "runs" / "slow-steps-synthetic" / "resnet110-s0"
    wait_for_step(run_dir, 2, proc, timeout=300)  # the first checkpoint: step 3 is under way
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "stopped: " in err and "at once by a second SIGTERM" in err
    status = json.loads((run_dir / runs.STATUS).read_text())
    assert status["state"] == runs.INTERRUPTED and "without a checkpoint" in status["message"]
    kept = torch.load(run_dir / runs.CHECKPOINT, weights_only=True)["step"]
    assert kept == 2 and f"last checkpoint (step {kept})" in status["message"]  # step 3 never finished
    assert not (run_dir / LOCK).exists()
