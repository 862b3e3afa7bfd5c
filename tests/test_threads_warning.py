"""More threads asked for than the cores this process can use: trained with as many as the
cores, with one warning that names them and the fix; never a warning at or below them.
Real processes with a real CPU affinity mask; nothing is mocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gradlab.threads import choose_threads

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
MANY = CORES + 998


@pytest.fixture()
def nobody_asked(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("GRADLAB_THREADS", raising=False)


def test_more_threads_than_cores_are_capped_with_a_warning(nobody_asked):
    threads, line = choose_threads(MANY, default=CORES)
    assert threads == CORES
    assert line.startswith(f"warning: --threads {MANY} is more than the {CORES} cores")
    assert f"give --threads {CORES} or fewer" in line and "\n" not in line


@pytest.mark.parametrize("asked", sorted({1, CORES}))
def test_no_warning_up_to_the_cores(nobody_asked, asked):
    assert choose_threads(asked, default=CORES) == (asked, None)


def test_the_environment_variable_is_named_in_the_warning(monkeypatch, nobody_asked):
    monkeypatch.setenv("GRADLAB_THREADS", str(MANY))
    threads, line = choose_threads(None, default=CORES)
    assert threads == CORES and f"GRADLAB_THREADS={MANY} is more than" in line and f"GRADLAB_THREADS={CORES}" in line
    monkeypatch.setenv("GRADLAB_THREADS", str(CORES))
    assert choose_threads(None, default=CORES) == (CORES, None)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_the_affinity_mask_counts_not_the_machine(nobody_asked):
    """Pinned to one core (as taskset or a container's cpuset would), 2 threads are too many."""
    code = "from gradlab.threads import choose_threads; print(choose_threads(2, default=2))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})).stdout
    assert "(1, 'warning: --threads 2 is more than the 1 cores" in out


def train(tmp_path, threads: int) -> tuple[str, dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GRADLAB_THREADS")}
    proc = subprocess.run([sys.executable, "-m", "gradlab", "train", "resnet8", "--preset", "quick", "--steps", "2",
                           "--runs-dir", str(tmp_path), "--wandb", "disabled", "--no-progress", "--threads",
                           str(threads)], capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (spec,) = tmp_path.glob("*/*/spec.json")
    return proc.stderr, json.loads(spec.read_text())


@pytest.mark.slow
def test_the_train_command_warns_once_and_trains_with_the_cores(tmp_path):
    err, spec = train(tmp_path / "many", MANY)
    lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert lines == [line for line in lines if f"--threads {MANY} is more than the {CORES} cores" in line]
    assert len(lines) == 1, err
    assert spec["env"]["threads"] == CORES
    err, spec = train(tmp_path / "cores", CORES)
    assert "more than the" not in err and spec["env"]["threads"] == CORES
