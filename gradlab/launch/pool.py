"""`jobs` runs at a time in local worker processes (gradlab.launch.worker) that share the
CPU threads; the parent passes SIGINT/SIGTERM on to them and starts no further run."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from gradlab import runs
from gradlab.config import RunSpec
from gradlab.errors import GradlabError, RunInterrupted, RunLockedError
from gradlab.launch.local import OnDone, OnStart
from gradlab.launch.worker import WorkerStopped, train_in_worker, worker_started


class _Forwarder:
    """The parent's SIGINT/SIGTERM while its workers train: passed on to each worker (which
    stops at the end of its step and marks its run interrupted), and no further run starts."""

    def __init__(self, stopping):
        self.stopping = stopping  # shared with the workers: the signal number, 0 until one comes
        self.signum: int | None = None
        self.pool: ProcessPoolExecutor | None = None

    def __call__(self, signum, frame) -> None:
        self.signum = self.stopping.value = signum
        processes = getattr(self.pool, "_processes", None) or {}  # pid -> Process (the pool's own, 3.8 to 3.13)
        for pid in list(processes):
            with contextlib.suppress(OSError):
                os.kill(pid, signum)

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach the main thread only: nothing to install
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class LocalPool:
    """`jobs` runs at a time in worker processes; the CPU threads are shared out among them.
    SIGINT/SIGTERM stop every worker's run after its step, then raise RunInterrupted here."""

    def __init__(self, jobs: int, callbacks: list | None = None, threads: int | None = None):
        self.jobs = jobs
        self.callbacks = callbacks
        self.threads = threads  # shared out among the workers; default: every core

    def run(self, specs: list[RunSpec], runs_dir: Path, on_start: OnStart, on_done: OnDone) -> None:
        threads = max(1, (self.threads or os.cpu_count() or 1) // self.jobs)
        ctx = multiprocessing.get_context("spawn")
        forward = _Forwarder(ctx.RawValue("i", 0))
        with forward.installed(), ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx,
                                                      initializer=worker_started,
                                                      initargs=(os.getpid(), forward.stopping)) as pool:
            forward.pool = pool
            futures, unsent = {}, []
            for spec in specs:
                if forward.signum is not None:
                    unsent.append(spec)
                    continue
                on_start(spec)
                futures[pool.submit(train_in_worker, spec, str(runs_dir), threads, self.callbacks)] = spec
            stopped = unsent + _collect(futures, forward, on_done)
        if forward.signum is not None:
            raise RunInterrupted(_stopped_message(forward.signum, stopped, runs_dir), 128 + forward.signum)


def _collect(futures: dict, forward: _Forwarder, on_done: OnDone) -> list[RunSpec]:
    """Report each run through on_done as it ends; once the parent is stopping, the rest do not
    start and what ends is only listed (returned: the runs a signal stopped or kept back)."""
    stopped = []
    for future in as_completed(futures):
        if forward.signum is not None:
            for f in futures:
                f.cancel()
        spec = futures[future]
        outcome = None if future.cancelled() else _outcome(future, futures)
        if forward.signum is not None or isinstance(outcome, WorkerStopped):
            stopped.append(spec)
        if forward.signum is not None:
            continue  # said once by the parent, for them all
        if isinstance(outcome, WorkerStopped):  # a signal to this worker alone: the others go on
            outcome = RunInterrupted(outcome.message, outcome.exit_code)
        on_done(spec, outcome)
    return stopped


def _outcome(future, futures) -> object:
    """A finished future's RunResult, WorkerStopped or exception; the user's errors stop the pool."""
    try:
        return future.result()
    except RunLockedError as e:  # another process has it: leave it to them
        return e
    except GradlabError:  # the user's to fix (bad data dir, clashing run dir): stop here
        for f in futures:
            f.cancel()
        raise
    except Exception as e:  # one broken run must not stop the others
        return e


def _stopped_message(signum: int, stopped: list[RunSpec], runs_dir: Path) -> str:
    """What the parent says when a signal stopped its workers: how far each run got."""
    where, waiting = [], 0
    for spec in stopped:
        status = runs.read_status(runs.run_dir_for(spec, runs_dir))
        if status.get("state") == runs.PENDING:
            waiting += 1
        else:
            where.append(f"{spec.name} {status.get('state')} at step {status.get('step', 0)}")
    if waiting:
        where.append(f"{waiting} run(s) not started")
    return (f"compare stopped by {signal.Signals(signum).name}: its workers stopped and marked their runs "
            f"({'; '.join(where) or 'no run had started'}); rerun the same command to resume")
