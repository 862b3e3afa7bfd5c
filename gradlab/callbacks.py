"""What the trainer tells the outside world (trackers, progress displays).

Subclass `Callback` and override what you need. A failing callback must not kill a
run: CallbackList catches, warns once per callback and goes on; a callback that asks the
run to stop (StopRun, e.g. a finding whose action is "stop") is obeyed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


class Callback:
    def on_start(self, run_dir: Path, spec: dict, resumed: bool) -> None:
        """Before the first step (or the first step after a resume)."""

    def on_eval(self, run_dir: Path, row: dict) -> None:
        """After each evaluation: one metrics row (step, lr, losses, errors, images/s)."""

    def on_layers(self, run_dir: Path, frame: pd.DataFrame) -> None:
        """After each recorder flush: new rows of layers.parquet."""

    def on_finding(self, run_dir: Path, finding) -> None:
        """A new finding about the run (gradlab.findings.Finding), once, as it is concluded."""

    def on_end(self, run_dir: Path, state: str, message: str) -> None:
        """When the run ends: done, diverged, failed or interrupted."""


class StopRun(Exception):
    """Raised by a callback that stops the run on purpose (not a failure of the callback):
    it reaches the loop, which ends the run as interrupted, resumable."""


class CallbackList(Callback):
    def __init__(self, callbacks: list[Callback]):
        self.callbacks = list(callbacks)
        self._failed: set[int] = set()

    def _each(self, method: str, *args, **kwargs) -> None:
        for i, cb in enumerate(self.callbacks):
            if i in self._failed:
                continue
            try:
                getattr(cb, method)(*args, **kwargs)
            except StopRun:
                raise
            except Exception as e:  # tracking must never crash training
                self._failed.add(i)
                log.warning("%s.%s failed (%s: %s); it is switched off for this run, training goes on",
                            type(cb).__name__, method, type(e).__name__, e)

    def on_start(self, run_dir, spec, resumed):
        self._each("on_start", run_dir, spec, resumed)

    def on_eval(self, run_dir, row):
        self._each("on_eval", run_dir, row)

    def on_layers(self, run_dir, frame):
        self._each("on_layers", run_dir, frame)

    def on_finding(self, run_dir, finding):
        self._each("on_finding", run_dir, finding)

    def on_end(self, run_dir, state, message):
        self._each("on_end", run_dir, state, message)
