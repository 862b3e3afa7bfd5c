"""A local pool's worker process: it takes its parent's SIGINT/SIGTERM (passed on once) and
stops after its step like `gradlab train`, and it notices when its parent is gone (SIGKILL)
and stops the same way, instead of training on and then waiting for its parent forever."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

from gradlab.config import RunSpec
from gradlab.errors import RunInterrupted


# The parent alone passes SIGINT/SIGTERM on to its workers, once each: they run in their own
# process group, so a terminal's Ctrl-C does not reach them twice (a second signal stops a
# run mid-step, without a checkpoint). A worker whose parent is gone (SIGKILLed) learns it
# from the kernel (Linux: PR_SET_PDEATHSIG, as SIGUSR1, which may come once per thread of the
# dying parent; elsewhere from a thread that watches its parent) and sends itself one
# SIGTERM: it stops at the end of its step like `gradlab train`, marks its run interrupted
# and exits, instead of training on and then waiting for its parent forever.
PR_SET_PDEATHSIG = 1
PARENT_GONE = signal.SIGUSR1
# one worker process's state: its parent's pid, the stop flag it shares with the parent,
# whether a run is under way, whether it has told itself to stop (its parent gone)
_worker = {"parent": None, "stopping": None, "in_task": False, "told": False}


@dataclass
class WorkerStopped:
    """What a worker returns for a run that a signal stopped (or kept from starting): an
    exception the pool can carry back (RunInterrupted does not unpickle)."""

    message: str
    exit_code: int


class _StopBeforeTraining(KeyboardInterrupt):
    """A signal to a worker between its runs, or before the trainer took signals over."""


def _parent_gone() -> bool:
    return _worker["told"] or (_worker["parent"] is not None and os.getppid() != _worker["parent"])


def _exit_worker(code: int) -> None:
    """End a worker whose parent is gone: nobody will read its result or give it more work."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _worker_signal(signum, frame) -> None:
    """SIGINT/SIGTERM outside the trainer's own handler (gradlab.interrupt)."""
    if _worker["in_task"]:
        raise _StopBeforeTraining(signal.Signals(signum).name)
    if _parent_gone():
        _exit_worker(128 + signum)
    # idle, the parent alive and stopping: it starts no more runs here (the shared flag)


def _parent_left(signum, frame) -> None:
    """The parent is gone: an idle worker exits; a training one sends itself one SIGTERM
    (none if the parent had passed one on already), so that its run stops after the step."""
    if not _worker["in_task"]:
        _exit_worker(128 + signal.SIGTERM)
    if _worker["told"] or _worker["stopping"].value:
        return
    _worker["told"] = True
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_at_once_when_stopping() -> None:
    """At a stopping worker's exit, after the other exit handlers: skip the interpreter's
    teardown of torch (seconds after a run) that the parent's shutdown would wait for."""
    stopping = _worker["stopping"]
    if _worker["told"] or (stopping is not None and stopping.value):
        _exit_worker(128 + (stopping.value or signal.SIGTERM))


def _die_with_parent() -> bool:
    """Ask Linux for PARENT_GONE when the parent exits (strictly: the parent's thread that
    started this worker, the main thread, since the pool starts workers on submit); False
    where that cannot be asked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(PARENT_GONE), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int, every_s: float = 0.5) -> None:
    """Where the kernel cannot be asked: PARENT_GONE to this process once the parent is gone."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os.kill(os.getpid(), PARENT_GONE)


def worker_started(parent: int, stopping) -> None:
    """A worker's initializer: its own process group, the parent's signals, its death."""
    _worker.update(parent=parent, stopping=stopping)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _worker_signal)
    signal.signal(PARENT_GONE, _parent_left)
    if not _die_with_parent():
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="gradlab-parent").start()
    atexit.register(_exit_at_once_when_stopping)  # registered first, so it runs last
    if os.getppid() != parent:  # it died before the kernel was asked
        _exit_worker(128 + signal.SIGTERM)


def train_in_worker(spec: RunSpec, runs_dir: str, threads: int, callbacks: list | None):
    """One run in a worker; a WorkerStopped when a signal stopped it or kept it from starting."""
    import torch

    from gradlab.train import train

    stopping = _worker["stopping"]
    if stopping is not None and stopping.value:
        return WorkerStopped(f"{spec.name} not started", 128 + stopping.value)
    _worker["in_task"] = True
    try:
        torch.set_num_threads(threads)
        return train(spec, runs_dir, progress=False, callbacks=callbacks)
    except RunInterrupted as e:
        return WorkerStopped(str(e), e.exit_code)
    except _StopBeforeTraining as e:
        return WorkerStopped(f"{spec.name} stopped by {e} before training", 128 + signal.Signals[str(e)])
    finally:
        _worker["in_task"] = False
        if _parent_gone():
            _exit_worker(128 + signal.SIGTERM)
