"""Drawing a report's figures: each a job, shared out between this process and a forked child.

Matplotlib drawing is single-threaded Python, and it is most of a report's time. A forked
child inherits the data and the theme, so it starts at once; if it fails in any way its
figures are drawn here instead, so errors surface with a traceback.

The child never outlives the report: it dies at once on SIGINT/SIGTERM, the kernel kills it
when this process dies (Linux's parent-death signal), and this process kills it on its way
out of render, whatever the exit (an error, KeyboardInterrupt, a stop signal raised as one).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gradlab.report.files import save_figure

CHILD_MIN_WAIT_S, CHILD_SLOWDOWN = 60.0, 5.0  # how long to wait for the drawing child


@dataclass
class FigureJob:
    """One figure to draw: make(*args) returns a matplotlib Figure. weight: rough cost."""

    name: str
    title: str
    caption: str
    weight: float
    make: Callable
    args: tuple


def _draw(jobs: list[FigureJob], out_dir: Path, formats, dpi: int) -> dict[str, dict[str, Path]]:
    return {j.name: save_figure(j.make(*j.args), out_dir, j.name, formats, dpi, []) for j in jobs}


def _fork_available() -> bool:
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


def render(jobs: list[FigureJob], out_dir: Path, formats, dpi: int, workers: int | None) -> dict[str, dict[str, Path]]:
    """Draw and save every figure (inside the caller's theme); with workers >= 2 a forked
    child draws part of them. Returns the saved paths by job name and format."""
    if workers is None:
        # not inside a training process (torch loaded, maybe CUDA and OpenMP pools): forking
        # those is legal but needless risk; `gradlab report` itself never loads torch
        workers = 1 if "torch" in sys.modules else min(2, os.cpu_count() or 1)
    if workers < 2 or len(jobs) < 2 or not _fork_available():
        return _draw(jobs, out_dir, formats, dpi)
    # longest job first into the lighter of two bins
    mine, theirs, load = [], [], [0.0, 0.0]
    for j in sorted(jobs, key=lambda j: -j.weight):
        b = 0 if load[0] <= load[1] else 1
        (mine if b == 0 else theirs).append(j)
        load[b] += j.weight
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
        child = ctx.Process(target=_child, args=(send, theirs, out_dir, formats, dpi, os.getpid()), daemon=True)
        child.start()
    send.close()
    try:
        return _share(child, recv, mine, theirs, out_dir, formats, dpi)
    finally:
        if child.is_alive():  # stopped or failed here: the child's figures are not wanted any more
            child.kill()
        child.join()


def _share(child, recv, mine, theirs, out_dir: Path, formats, dpi: int) -> dict[str, dict[str, Path]]:
    """Draw ``mine`` here while ``child`` draws ``theirs``; take its result, or draw its
    figures here when it failed or is stuck."""
    start = time.perf_counter()
    done = _draw(mine, out_dir, formats, dpi)
    # the child has about as much to draw: a child far slower than that is stuck
    patience = max(CHILD_MIN_WAIT_S, CHILD_SLOWDOWN * (time.perf_counter() - start))
    result = None
    if recv.poll(patience):
        try:
            result = recv.recv()
        except (EOFError, OSError):
            result = None
    child.join(timeout=10)
    if child.is_alive():
        child.kill()
        child.join()
    if isinstance(result, dict) and set(result) == {j.name for j in theirs}:
        done.update(result)
    else:
        done.update(_draw(theirs, out_dir, formats, dpi))
    return done


def _child(conn, jobs, out_dir, formats, dpi, parent: int) -> None:
    _die_with(parent)
    try:
        conn.send(_draw(jobs, out_dir, formats, dpi))
    except BaseException:
        conn.send(None)
    finally:
        conn.close()


PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal this process gets when its parent dies


def _die_with(parent: int) -> None:
    """Make this (forked) child stop at once on SIGINT/SIGTERM, instead of the parent's
    handlers it inherited, and be killed when ``parent`` dies; exit now if it already has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the parent's own kill on its way out still applies
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
