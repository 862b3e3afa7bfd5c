"""CPU threads: what the user asks for wins; otherwise a busy machine's busy cores are left
out, and the commands say so once. Real processes keep a core busy; nothing is mocked."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from gradlab.errors import ConfigError
from gradlab.threads import busy_cores, choose_threads, requested_threads

HOG = "import time\nend = time.time() + 120\nwhile time.time() < end: pass"


@pytest.fixture()
def busy_core():
    hog = subprocess.Popen([sys.executable, "-c", HOG])
    time.sleep(0.5)
    yield
    hog.kill()
    hog.wait()


@pytest.fixture()
def nobody_asked(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("GRADLAB_THREADS", raising=False)


def test_the_thread_count_asked_for_wins_in_order(monkeypatch, nobody_asked):
    assert requested_threads(None) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert requested_threads(None) == 3
    monkeypatch.setenv("GRADLAB_THREADS", "2")
    assert requested_threads(None) == 2 and requested_threads(5) == 5
    assert choose_threads(1, default=2) == (1, None)  # up to the usable cores (more: tests/test_threads_warning.py)
    monkeypatch.setenv("GRADLAB_THREADS", "two")
    with pytest.raises(ConfigError, match="GRADLAB_THREADS must be a whole number of threads >= 1"):
        requested_threads(None)


def test_a_busy_core_is_left_out_and_said(busy_core, nobody_asked):
    cores = os.cpu_count()
    assert busy_cores() >= 0.8  # the hog's core
    threads, note = choose_threads(None, default=cores)
    assert 1 <= threads <= cores - 1
    assert "the machine is busy" in note and f"--threads {cores}" in note


@pytest.mark.slow
def test_the_train_command_says_once_that_the_machine_is_busy(tmp_path, busy_core, nobody_asked):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GRADLAB_THREADS")}
    proc = subprocess.run([sys.executable, "-m", "gradlab", "train", "resnet8", "--preset", "quick", "--steps", "2",
                           "--runs-dir", str(tmp_path), "--wandb", "disabled"], capture_output=True, text=True,
                          env=env, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: nothing to leave out")
    assert proc.stderr.count("note: the machine is busy") == 1
    asked = subprocess.run([sys.executable, "-m", "gradlab", "train", "resnet8", "--preset", "quick", "--steps",
                            "2", "--runs-dir", str(tmp_path / "b"), "--wandb", "disabled", "--threads", "2"],
                           capture_output=True, text=True, env=env, timeout=300, check=False)  # fmt: skip
    assert asked.returncode == 0 and "note:" not in asked.stderr


def test_bench_busy_times_the_three_variants(nobody_asked):
    from gradlab.bench.busy import VARIANTS, format_result, run_busy

    result = run_busy("resnet8", batch_size=16, steps=1, repeats=1)
    assert set(result["results"]) == set(VARIANTS)
    assert all(r["n"] == 1 and r["median_s"] > 0 for r in result["results"].values())
    (chosen,) = result["settings"]["threads_chosen"]
    assert 1 <= chosen <= result["settings"]["all_threads"]
    assert "threads chosen" in format_result(result)
