"""Runs in this process, one after another, and the choice between that and a local pool
(gradlab.launch.make_launcher). A launcher takes RunSpecs and reports each outcome through
``on_done(spec, outcome)``: a RunResult, or the exception that ended the run."""

from __future__ import annotations

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
