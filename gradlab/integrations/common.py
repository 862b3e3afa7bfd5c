"""What the loop callbacks share: their options checked when they are made, where a run
goes by default and what it is called, the recorder they start, and the trainer's own
scalars as numbers."""

from __future__ import annotations

import inspect
from itertools import count
from pathlib import Path

import torch.nn as nn

from gradlab.errors import RecorderError
from gradlab.findings.live import FindingStop, live_findings, wired
from gradlab.recorder import Recorder
from gradlab.tracking.common import finite

__all__ = ["checked_options", "default_run", "numbers", "start_recorder", "step_or_stop"]

OWN_OPTIONS = ("tensorboard", "findings", "resume")  # taken by the callbacks, not passed to Recorder


def checked_options(options: dict, who: str) -> dict:
    """``options`` of callback ``who``, checked as the recorder will check them, so that a
    typo fails when the callback is made, not at the start of a fit."""
    options = dict(options)
    known = sorted(set(inspect.signature(Recorder.__init__).parameters) - {"self", "model", "run_dir"})
    unknown = sorted(set(options) - set(known) - set(OWN_OPTIONS))
    if unknown:
        raise RecorderError(f"{who} got unknown option{'s' * (len(unknown) > 1)} {', '.join(unknown)}; it takes "
                            f"run_dir, {', '.join(OWN_OPTIONS)} and the recorder's: {', '.join(known)}.")
    if options.get("tensorboard") is not None:
        from gradlab.tracking import check_log_dir

        check_log_dir(options["tensorboard"])
    live_findings(options.get("findings"))
    rest = {k: v for k, v in options.items() if k not in OWN_OPTIONS}
    Recorder(nn.Module(), run_dir=Path("gradlab"), resume=bool(options.get("resume")), **rest)  # checks, writes nothing
    return options


def default_run(parent: Path, label: str, resuming: bool = False) -> tuple[Path, str]:
    """Where a callback's run goes when no run_dir is given, and its name: ``parent/gradlab``
    named ``label``, or ``gradlab-2``, ``-3``, ... named ``label-2``, ... when a run is
    there already (a second fit into the same folder), so that runs are never drawn as one;
    ``resuming`` (training resumed from a checkpoint): the last of them that holds a run."""
    last = None
    for n in count(1):
        suffix = "" if n == 1 else f"-{n}"
        run_dir = Path(parent) / f"gradlab{suffix}"
        if not run_dir.exists() or not any(run_dir.iterdir()):
            return last if resuming and last is not None else (run_dir, f"{label}{suffix}")
        last = run_dir, f"{label}{suffix}"
    raise AssertionError("unreachable")


def start_recorder(model, run_dir: Path, step: int, options: dict, name: str | None = None,
                   resume: bool | None = None) -> Recorder:  # fmt: skip
    """A started Recorder on ``model`` writing ``run_dir``, named ``name`` unless the options
    name it, its counter at ``step`` (a resumed fit continues its run directory), with the
    callback's recorder ``options``; option ``tensorboard=DIR`` adds a
    gradlab.tracking.TensorBoardTracker writing under DIR, and ``findings=`` the rules at
    each flush, as in gradlab.watch."""
    options = dict(options)
    resume = options.pop("resume", step > 0 if resume is None else resume)
    tensorboard = options.pop("tensorboard", None)
    if tensorboard is not None:
        from gradlab.tracking import TensorBoardTracker, check_log_dir

        options["callbacks"] = [*options.get("callbacks", ()), TensorBoardTracker(check_log_dir(tensorboard))]
    if options.get("name") is None and name is not None:
        options["name"] = name
    live, options["callbacks"] = wired(options.pop("findings", None), run_dir, options.get("callbacks", ()))
    rec = Recorder(model, run_dir=Path(run_dir), resume=resume, **options)
    if live is not None:
        live.forward = rec._rows.writer.callbacks
    rec.start()
    if step > 0:
        rec.set_step(step)
    return rec


def step_or_stop(rec: Recorder, step: int) -> FindingStop | None:
    """rec.step(step); the FindingStop of a finding whose action is "stop", for the callback
    to end the fit cleanly (its trainer's own stop flag) and mark the run with it."""
    try:
        rec.step(step)
    except FindingStop as e:
        return e
    return None


def numbers(metrics: dict) -> dict[str, float]:
    """The finite numbers among a trainer's logged values (0-dim tensors read once)."""
    out = {}
    for key, value in (metrics or {}).items():
        if hasattr(value, "numel") and value.numel() == 1:
            value = value.item()
        if finite(value):
            out[str(key)] = float(value)
    return out
