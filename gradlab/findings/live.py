"""Findings while a run trains: the rules run on the run directory at each flush (never in
the hooks), and each new finding is said once: as a Python warning (FindingWarning), to the
run's trackers (a W&B alert, a TensorBoard text: Callback.on_finding), and through the
action the user chose: "warn" (only that), "stop" (end the run cleanly at the first finding
of ``stop_at`` severity or worse: StopRun reaches the loop, the run is marked interrupted by
the finding and resumes like any interrupted run), or a function called with the finding.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable

from gradlab import runs as R
from gradlab.callbacks import Callback, StopRun
from gradlab.errors import RecorderError
from gradlab.findings.engine import check_runs, default_settings
from gradlab.findings.finding import SEVERITIES, Finding, severity_rank
from gradlab.findings.thresholds import Settings

__all__ = ["FindingStop", "FindingWarning", "LiveFindings", "live_findings", "wired"]


class FindingWarning(UserWarning):
    """A finding about a run that is training (gradlab.findings)."""


class FindingStop(StopRun):
    """A finding whose action is "stop": the run ends here, interrupted, resumable."""

    def __init__(self, finding: Finding):
        super().__init__(f"stopped by a finding: {finding.rule} ({finding.severity}) in {finding.run}, "
                         f"{finding.when}: {finding.summary}")  # fmt: skip
        self.finding = finding


class LiveFindings(Callback):
    """The rules at each flush of a run directory. ``action``: "warn", "stop" or a function of
    a Finding; ``stop_at``: the least severity that stops ("error" by default); ``settings``:
    thresholds (gradlab.findings.Settings); ``budget``: None (default) checks at every flush;
    a fraction such as 0.05 bounds the share of the training time the rules take on a long
    run, whose whole table they read (a check is skipped while the last one took more than
    that share of the time since; the run's end checks what was skipped). ``forward``: the run's other
    callbacks, told of each new finding (the recorder sets it)."""

    def __init__(self, action: str | Callable = "warn", stop_at: str = "error", settings: Settings | None = None,
                 budget: float | None = None):  # fmt: skip
        if not (callable(action) or action in ("warn", "stop")):
            raise RecorderError(f"findings action must be 'warn', 'stop' or a function of a Finding, not {action!r}")
        if stop_at not in SEVERITIES:
            raise RecorderError(f"stop_at must be one of {', '.join(SEVERITIES)}, not {stop_at!r}")
        self.action, self.stop_at = action, stop_at
        self.settings = settings or default_settings()
        self.forward: Callback | None = None
        self.said: set[tuple] = set()
        self.findings: list[Finding] = []  # every finding said so far, in order
        if budget is not None and not 0 < budget <= 1:
            raise RecorderError(f"budget must be a fraction of the training time in (0, 1] or None, not {budget!r}")
        self.budget = budget
        self.checks = 0  # how many times the rules ran
        self._last = (0.0, 0.0)  # (when the last check ended, how long it took)
        self._pending = False  # rows written since the last check

    def on_layers(self, run_dir: Path, frame) -> None:
        """At a flush: the rules, unless a ``budget`` is set and the last check took more than
        that share of the time since (the next flush checks)."""
        ended, took = self._last
        if self.budget is not None and took and time.monotonic() - ended < took / self.budget:
            self._pending = True
            return
        self._check(run_dir, final=False)

    def on_end(self, run_dir: Path, state: str, message: str) -> None:
        """The rows a skipped check left unread, once the run has ended (said, not acted on)."""
        if self._pending:
            self._check(run_dir, final=True)

    def _check(self, run_dir: Path, final: bool) -> None:
        start = time.monotonic()
        found = check_runs([R.read_run(run_dir)], self.settings)
        self._last, self._pending = (time.monotonic(), time.monotonic() - start), False
        self.checks += 1
        for finding in found:
            key = (finding.rule, finding.severity, finding.first_step, tuple(p.layer for p in finding.where))
            if key in self.said:
                continue
            self.said.add(key)
            self.findings.append(finding)
            self._say(run_dir, finding, final)

    def _say(self, run_dir: Path, finding: Finding, final: bool = False) -> None:
        warnings.warn(f"gradlab finding: {finding.severity} {finding.rule} in {finding.run} ({finding.when}; "
                      f"{finding.where_text}): {finding.summary}. {finding.suggestion}", FindingWarning,
                      stacklevel=2)  # fmt: skip
        if self.forward is not None:
            self.forward.on_finding(run_dir, finding)
        if callable(self.action):
            self.action(finding)
        elif self.action == "stop" and not final and severity_rank(finding.severity) >= severity_rank(self.stop_at):
            raise FindingStop(finding)


def live_findings(findings) -> LiveFindings | None:
    """watch(findings=...): None/False (off), True or "warn", "stop", a function, or a LiveFindings."""
    if findings is None or findings is False:
        return None
    if isinstance(findings, LiveFindings):
        return findings
    return LiveFindings("warn" if findings is True else findings)


def wired(findings, run_dir, callbacks) -> tuple[LiveFindings | None, tuple]:
    """The LiveFindings of a recorder's ``findings=`` option and the callbacks its run
    directory gets with it (a RunWriter given as run_dir takes it among its own); the
    recorder then sets ``live.forward`` to its writer's callbacks."""
    live = live_findings(findings)
    if live is None:
        return None, tuple(callbacks)
    if run_dir is None:
        raise RecorderError("findings are concluded from a run directory: give watch() a run_dir as well")
    if hasattr(run_dir, "callbacks"):  # a RunWriter made beforehand
        run_dir.callbacks.callbacks.insert(0, live)
        return live, tuple(callbacks)
    return live, (live, *callbacks)  # first: at the run's end it still reaches the trackers
