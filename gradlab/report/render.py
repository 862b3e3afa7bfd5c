"""Drawing a report's figures: each a job, shared out between this process and a forked child.

Matplotlib drawing is single-threaded Python, and it is most of a report's time. A forked
child inherits the data and the theme, so it starts at once; if it fails in any way its
figures are drawn here instead, so errors surface with a traceback.
"""

from __future__ import annotations

import multiprocessing as mp
import os
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
        child = ctx.Process(target=_child, args=(send, theirs, out_dir, formats, dpi), daemon=True)
        child.start()
    send.close()
    start = time.perf_counter()
    try:
        done = _draw(mine, out_dir, formats, dpi)
    except BaseException:
        child.kill()
        child.join()
        raise
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


def _child(conn, jobs, out_dir, formats, dpi) -> None:
    try:
        conn.send(_draw(jobs, out_dir, formats, dpi))
    except BaseException:
        conn.send(None)
    finally:
        conn.close()
