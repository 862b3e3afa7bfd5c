"""`gradlab compare --jobs 2` stopped by a real signal: its workers stop with it.

SIGTERM to the parent: every worker marks its run interrupted (after a checkpoint) and
exits, then the parent exits 143; rerunning the command resumes the runs exactly. SIGKILL
to the parent: the workers notice it is gone, mark their runs interrupted and exit. No
mocks: real processes, real signals, /proc scanned for what is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from gradlab import runs
from gradlab.compare import plan
from gradlab.config import load_preset
from gradlab.train import train
from tests.test_interruptions import same_run

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")

STEPS = 300
CONFIG = f"""
preset = "signals"
[data]
name = "digits"
[recipe]
steps = {STEPS}
batch_size = 64
lr = 0.03
milestones = [150, 225]
eval_every = 50
checkpoint_every = 10
[compare]
depths = [8]
families = ["plain", "resnet"]
"""
GONE_WITHIN_S = 10.0


def specs(cfg):
    return plan(load_preset(path=cfg), (8,), ("plain", "resnet"), (0,))


def compare_cmd(cfg, root):
    return [sys.executable, "-m", "gradlab", "compare", "--config", str(cfg), "--jobs", "2", "--threads", "2",
            "--runs-dir", str(root / "runs"), "--out", str(root / "report"), "--formats", "png",
            "--no-progress", "--wandb", "disabled"]  # fmt: skip


def start(cfg, root):
    """The compare in the background, its output in files (an orphaned worker would hold a pipe open)."""
    out, err = open(root / "out.txt", "w"), open(root / "err.txt", "w")
    return subprocess.Popen(compare_cmd(cfg, root), stdout=out, stderr=err, text=True)


def status(run_dir) -> dict:
    try:
        return json.loads((run_dir / runs.STATUS).read_text())
    except (OSError, ValueError):
        return {}


def wait_until_training(run_dirs, proc, root, timeout=180):
    """Until every run says running past step 0 (a checkpoint written: mid-training)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = [status(d) for d in run_dirs]
        if all(s.get("state") == runs.RUNNING and s.get("step", 0) > 0 for s in now):
            return
        assert proc.poll() is None, (root / "err.txt").read_text()[-3000:]
        time.sleep(0.05)
    raise AssertionError(f"runs not under way after {timeout} s: {[status(d) for d in run_dirs]}")


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a process from /proc, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root_pid: int) -> dict[int, int]:
    """pid -> start time of every process below ``root_pid`` (workers, the resource tracker)."""
    parent_of = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None:
            parent_of[int(name)] = st
    found, frontier = {}, {root_pid}
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in parent_of.items() if ppid in frontier and pid not in found}
        found.update({pid: parent_of[pid][2] for pid in frontier})
    return found


def alive(procs: dict[int, int]) -> list[int]:
    """Those of ``procs`` still running (a zombie has ended; a reused pid is another process)."""
    return [pid for pid, started in procs.items()
            if (st := _stat(pid)) is not None and st[1] != "Z" and st[2] == started]  # fmt: skip


def seconds_until_gone(procs: dict[int, int], limit: float) -> float | None:
    start = time.time()
    while time.time() - start < limit:
        if not alive(procs):
            return time.time() - start
        time.sleep(0.05)
    return None


def kill_left(procs: dict[int, int]) -> None:
    for pid in alive(procs):  # what the test started, so that a failure leaves nothing behind
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The config, and the uninterrupted runs (in this process, with the workers' one thread)."""
    root = tmp_path_factory.mktemp("signals")
    cfg = root / "signals.toml"
    cfg.write_text(CONFIG)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # --threads 2 shared out among --jobs 2
    try:
        reference = {s.name: train(s, root / "reference", progress=False).run_dir for s in specs(cfg)}
    finally:
        torch.set_num_threads(before)
    return cfg, reference


def stop_mid_training(cfg, root, sig):
    """Start the compare, wait until both runs are under way, send ``sig`` to the parent;
    (parent, its processes, seconds until they were all gone or None)."""
    run_dirs = [runs.run_dir_for(s, root / "runs") for s in specs(cfg)]
    proc = start(cfg, root)
    procs = {}
    try:
        wait_until_training(run_dirs, proc, root)
        procs = descendants(proc.pid)
        assert len(procs) >= 2, procs  # two workers (and multiprocessing's resource tracker)
        procs[proc.pid] = _stat(proc.pid)[2]
        proc.send_signal(sig)
        gone = seconds_until_gone(procs, GONE_WITHIN_S)
        print(f"{signal.Signals(sig).name}: {len(procs)} processes gone after {gone} s")
        return proc, run_dirs, gone
    finally:
        kill_left(procs)
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_sigterm_stops_the_workers_marks_the_runs_and_they_resume_exactly(tmp_path, setup):
    cfg, reference = setup
    proc, run_dirs, gone = stop_mid_training(cfg, tmp_path, signal.SIGTERM)
    err = (tmp_path / "err.txt").read_text()
    assert gone is not None, f"processes of the compare still alive {GONE_WITHIN_S} s after SIGTERM; {err[-2000:]}"
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "stopped: " in err and "rerun the same command to resume" in err
    for d in run_dirs:
        s = status(d)
        assert s["state"] == runs.INTERRUPTED and 0 < s["step"] < STEPS, s
        assert torch.load(d / runs.CHECKPOINT, weights_only=True)["step"] == s["step"]
    again = subprocess.run(compare_cmd(cfg, tmp_path), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("resuming from step") == 2, again.stderr
    for d in run_dirs:
        assert status(d)["state"] == runs.DONE
        same_run(reference[d.name], d)


@pytest.mark.slow
def test_sigkill_of_the_parent_takes_its_workers_down(tmp_path, setup):
    cfg, _ = setup
    proc, run_dirs, gone = stop_mid_training(cfg, tmp_path, signal.SIGKILL)
    assert gone is not None, f"workers still alive {GONE_WITHIN_S} s after their parent was killed"
    for d in run_dirs:  # each noticed, stopped after its step and marked its run
        s = status(d)
        assert s["state"] == runs.INTERRUPTED and "SIGTERM" in s["message"], s


@pytest.mark.slow
def test_sigterm_to_one_worker_interrupts_its_run_alone_and_says_so(tmp_path, setup):
    cfg, _ = setup
    run_dirs = [runs.run_dir_for(s, tmp_path / "runs") for s in specs(cfg)]
    proc = start(cfg, tmp_path)
    procs = {}
    try:
        wait_until_training(run_dirs, proc, tmp_path)
        procs = descendants(proc.pid)
        os.kill(status(run_dirs[0])["pid"], signal.SIGTERM)  # the worker training the first run
        proc.wait(timeout=300)
    finally:
        kill_left(procs)
        proc.kill()
        proc.wait()
    said = (tmp_path / "out.txt").read_text() + (tmp_path / "err.txt").read_text()
    assert status(run_dirs[0])["state"] == runs.INTERRUPTED and status(run_dirs[1])["state"] == runs.DONE
    assert f"{run_dirs[0].name}: interrupted (" in said and "failed (RunInterrupted" not in said, said[-3000:]
