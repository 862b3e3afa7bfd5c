"""Graceful stops: SIGINT/SIGTERM finish the current step, then the trainer checkpoints.

A second SIGINT or SIGTERM while stopping ends the step at once (StopNow, a
KeyboardInterrupt): the run is marked interrupted and resumes from its last checkpoint.

Hand-off signals (e.g. submitit's preemption/timeout signal, USR2) also stop at the end of
the step; after the checkpoint, `StopRequest.hand_back()` calls the handler that was
installed before (submitit's, which requeues the job and exits), so the requeued job
resumes from that very step instead of the last periodic checkpoint.

Work with nothing to finish first (a report) stops at the first signal instead:
`stop_at_once()` raises StopNow where the signal lands, so that its cleanup runs as the
exception unwinds and the command exits with 128 + the signal's number, as train does.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class StopNow(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: stop now, mid-step, without a checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


class StopRequest:
    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, object] = {}  # hand-off signal -> the handler installed before ours

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def hand_back(self) -> None:
        """Call the previous handler of the hand-off signal that stopped us, if any (it may
        raise SystemExit, as submitit's does after requeueing)."""
        handler = self.previous.get(self.signum)
        if callable(handler):
            handler(self.signum, None)


@contextlib.contextmanager
def graceful_stop(handoff: tuple[int, ...] = ()):
    """Catch SIGINT, SIGTERM and the `handoff` signals for the duration (main thread only;
    elsewhere a no-op)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested and signum in (signal.SIGINT, signal.SIGTERM):
            raise StopNow(signum)
        stop.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, *handoff)}
    stop.previous = {s: previous[s] for s in handoff}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def stop_at_once():
    """SIGINT and SIGTERM raise StopNow at once for the duration (main thread only;
    elsewhere a no-op), instead of KeyboardInterrupt or dying without cleanup."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise StopNow(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
