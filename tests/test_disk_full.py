"""A full disk (or a file-size limit) mid-run: one clear message, the run marked failed,
what was written before intact, and a rerun that resumes. Real writes, no mocks: a
file-size limit (RLIMIT_FSIZE) everywhere, and a 3 MB tmpfs where this user may mount one."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradlab import runs
from gradlab.file_io import read_json
from gradlab.config import load_preset, make_run_spec

STEPS = 40  # --steps 40 of the quick preset: a checkpoint every 13 steps, an evaluation every 3

INTERRUPT = """
import sys
from gradlab.callbacks import Callback
from gradlab.config import load_preset, make_run_spec
from gradlab.train import train

class StopAt(Callback):
    def on_eval(self, run_dir, row):
        if row["step"] == 15:
            raise KeyboardInterrupt

try:
    train(make_run_spec("resnet20", load_preset("quick"), steps=40), sys.argv[1], progress=False,
          callbacks=[StopAt()])
except KeyboardInterrupt:
    pass
"""


def gradlab_train(runs_dir: Path, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gradlab", "train", "resnet20", "--preset", "quick", "--steps", str(STEPS),
           "--runs-dir", str(runs_dir), "--wandb", "disabled"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False,
                          preexec_fn=limit if limit_bytes else None)


def assert_failed_cleanly(proc, run_dir: Path, why: str) -> None:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert f"cannot write {run_dir}" in error and why in error and "free some space" in error
    assert not list(run_dir.glob(".*.tmp"))  # the partial file is gone, and its space with it
    json.loads((run_dir / runs.SPEC).read_text())
    runs.read_run(run_dir).metrics


@pytest.mark.slow
def test_a_file_size_limit_fails_the_run_cleanly_and_keeps_the_last_checkpoint(tmp_path):
    spec = make_run_spec("resnet20", load_preset("quick"), steps=STEPS)
    run_dir = runs.run_dir_for(spec, tmp_path)
    subprocess.run([sys.executable, "-c", INTERRUPT, str(tmp_path)], check=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    before = torch.load(run_dir / runs.CHECKPOINT, weights_only=True)
    assert 0 < before["step"] < STEPS and (run_dir / runs.CHECKPOINT).stat().st_size > 2**20

    proc = gradlab_train(tmp_path, limit_bytes=2**20)  # the next checkpoint cannot be written
    assert_failed_cleanly(proc, run_dir, "File too large")
    status = read_json(run_dir / runs.STATUS)
    assert status["state"] == runs.FAILED and "cannot write" in status["message"]
    kept = torch.load(run_dir / runs.CHECKPOINT, weights_only=True)
    assert kept["step"] == before["step"]
    assert all(torch.equal(kept["model"][k], v) for k, v in before["model"].items())

    again = gradlab_train(tmp_path)  # room again: the run resumes and finishes
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from step {before['step']} of {STEPS}" in again.stderr
    assert read_json(run_dir / runs.STATUS)["state"] == runs.DONE


@pytest.fixture()
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          check=False) if os.geteuid() == 0 else None  # fmt: skip
    if made is None or made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the file-size-limit test covers the same path")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_fails_the_run_cleanly(tiny_disk):
    proc = gradlab_train(tiny_disk)
    run_dir = runs.run_dir_for(make_run_spec("resnet20", load_preset("quick"), steps=STEPS), tiny_disk)
    assert_failed_cleanly(proc, run_dir, "No space left on device")
    assert read_json(run_dir / runs.STATUS)["state"] == runs.FAILED
