"""Test helpers: `gradlab report` as a real process, stopped by real signals while it draws,
and what it leaves behind (its processes, its output folder)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from gradlab.bench import synthetic_runs as F
from gradlab.report import build_report

REPO = Path(__file__).resolve().parents[1]


def make_runs(root: Path) -> Path:
    """Enough runs (plain/ResNet 20/56/110, two seeds) for seconds of drawing; their folder."""
    for family in ("plain", "resnet"):
        for depth in (20, 56, 110):
            for seed in (0, 1):
                F.make_run(root, family, depth, seed, n_records=30)
    return root


def old_report(runs: Path, out: Path) -> dict[str, bytes]:
    """A complete report of the plain-20 runs alone in ``out``, and a user's file beside it:
    every file's bytes by relative path (different from a report of all the runs)."""
    build_report([runs / "degradation-test" / "plain20-s0"], out, formats="pdf,png", workers=1)
    (out / "notes.txt").write_text("mine")
    return snapshot(out)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def start_report(runs: Path, out: Path) -> subprocess.Popen:
    """`python -m gradlab report RUNS --out OUT` in a process of its own, its output in files
    beside OUT (:func:`stderr`): a pipe would stay open while any child lives, and waiting
    on it would wait for the child too."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "gradlab", "report", str(runs), "--out", str(out), "--formats", "pdf,png"]
    with open(out.parent / "stdout.txt", "w") as so, open(out.parent / "stderr.txt", "w") as se:
        return subprocess.Popen(cmd, stdout=so, stderr=se, env=env, cwd=out.parent)


def stderr(out: Path) -> str:
    return (out.parent / "stderr.txt").read_text()


def children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat and stat[1] == pid and stat[0] != "Z":
                found.append(int(entry))
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    stat = _stat(pid)
    return bool(stat) and stat[0] != "Z"


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid``, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def wait_drawing(proc: subprocess.Popen, timeout: float = 60.0, after: float = 0.4) -> list[int]:
    """Wait until the report has forked its drawing child (it draws from then on), then
    ``after`` seconds more; the child's pid(s). Fails when the report ends first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        kids = children(proc.pid)
        if kids:
            time.sleep(after)
            return kids
        assert proc.poll() is None, f"the report ended before drawing (status {proc.returncode})"
        time.sleep(0.01)
    raise AssertionError("the report did not start drawing in time")


def gone_within(pids: list[int], seconds: float) -> list[int]:
    """The ``pids`` still running after up to ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(running(p) for p in pids):
        time.sleep(0.02)
    return [p for p in pids if running(p)]


def leftovers(out: Path) -> list[str]:
    """Names beside ``out`` that a report builds in or sets aside (".<name>.partial-<pid>", ".old-")."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))
