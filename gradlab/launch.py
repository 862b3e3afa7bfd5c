"""Where runs execute: in this process, or in a pool of local worker processes.

A launcher takes RunSpecs and reports each outcome through `on_done(spec, outcome)`,
where outcome is a RunResult or the exception that ended the run. The trainer knows
nothing of launchers; a run is the same wherever it executes.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

from gradlab.config import RunSpec
from gradlab.errors import GradlabError, RunLockedError

OnStart = Callable[[RunSpec], None]
OnDone = Callable[[RunSpec, object], None]


class InProcess:
    """One run after another in this process (with the trainer's progress bar)."""

    def __init__(self, progress: bool | None = None, callbacks: list | None = None):
        self.progress = progress
        self.callbacks = callbacks

    def run(self, specs: list[RunSpec], runs_dir: Path, on_start: OnStart, on_done: OnDone) -> None:
        from gradlab.train import train

        for spec in specs:
            on_start(spec)
            try:
                outcome = train(spec, runs_dir, progress=self.progress, callbacks=self.callbacks)
            except RunLockedError as e:  # another process has it: leave it to them
                outcome = e
            except GradlabError:
                raise  # the user's to fix (bad data dir, clashing run dir): stop here
            except Exception as e:  # one broken run must not stop the others
                outcome = e
            on_done(spec, outcome)


def _train_in_worker(spec: RunSpec, runs_dir: str, threads: int, callbacks: list | None):
    import torch

    from gradlab.train import train

    torch.set_num_threads(threads)
    return train(spec, runs_dir, progress=False, callbacks=callbacks)


class LocalPool:
    """`jobs` runs at a time in worker processes; the CPU threads are shared out among them."""

    def __init__(self, jobs: int, callbacks: list | None = None):
        self.jobs = jobs
        self.callbacks = callbacks

    def run(self, specs: list[RunSpec], runs_dir: Path, on_start: OnStart, on_done: OnDone) -> None:
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx) as pool:
            futures = {}
            for spec in specs:
                on_start(spec)
                futures[pool.submit(_train_in_worker, spec, str(runs_dir), threads, self.callbacks)] = spec
            for future in as_completed(futures):
                spec = futures[future]
                try:
                    outcome = future.result()
                except RunLockedError as e:
                    outcome = e
                except GradlabError:
                    for f in futures:
                        f.cancel()
                    raise
                except Exception as e:
                    outcome = e
                on_done(spec, outcome)


def make_launcher(jobs: int = 1, progress: bool | None = None, callbacks: list | None = None):
    if jobs < 1:
        raise GradlabError(f"--jobs must be at least 1, got {jobs}")
    return InProcess(progress, callbacks) if jobs == 1 else LocalPool(jobs, callbacks)
