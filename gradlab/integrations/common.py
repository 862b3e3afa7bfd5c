"""What the loop callbacks share: the recorder they start, where its run directory goes,
and the trainer's own scalars as numbers."""

from __future__ import annotations

from pathlib import Path

from gradlab.findings.live import FindingStop, wired
from gradlab.recorder import Recorder
from gradlab.tracking.common import finite

__all__ = ["numbers", "start_recorder", "step_or_stop"]


def start_recorder(model, run_dir, default_dir: Path, step: int, options: dict) -> Recorder:
    """A started Recorder on ``model`` writing ``run_dir`` (None: ``default_dir``), its
    counter at ``step`` (a resumed fit), with the callback's recorder ``options``; option
    ``tensorboard=DIR`` adds a gradlab.tracking.TensorBoardTracker writing under DIR, and
    ``findings=`` the rules at each flush, as in gradlab.watch."""
    options = dict(options)
    resume = options.pop("resume", step > 0)
    tensorboard = options.pop("tensorboard", None)
    if tensorboard is not None:
        from gradlab.tracking import TensorBoardTracker, check_log_dir

        options["callbacks"] = [*options.get("callbacks", ()), TensorBoardTracker(check_log_dir(tensorboard))]
    run_dir = Path(run_dir) if run_dir is not None else default_dir
    live, options["callbacks"] = wired(options.pop("findings", None), run_dir, options.get("callbacks", ()))
    rec = Recorder(model, run_dir=run_dir, resume=resume, **options)
    if live is not None:
        live.forward = rec._writer.callbacks
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
