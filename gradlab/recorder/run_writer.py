"""A run directory from anyone's training loop: ``gradlab.watch(model, run_dir=...)``.

Writes the same files gradlab's trainer writes (gradlab.runs), so that ``gradlab report``
draws a user's own model as it draws the zoo's: spec.json (the model's description —
probe points and parameters in depth order — the user's free-form ``config``, versions),
status.json, metrics.parquet (what ``rec.log`` was given) and layers.parquet (the
recorder's rows). Files are rewritten atomically at every flush of the recorder, so a crash
loses at most the rows since the last one and the directory is always readable. There is
no checkpoint: the user's loop owns the model and optimizer.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from gradlab import runs
from gradlab.callbacks import CallbackList
from gradlab.errors import RecorderError, RunDirError
from gradlab.folders import check_output_folder
from gradlab.models.probe_points import CONV, FC
from gradlab.run_lock import LOCK, RunLock

__all__ = ["RunWriter", "metrics_row", "model_description"]

OWN_FILES = (runs.SPEC, runs.STATUS, runs.METRICS, runs.LAYERS)


class RunWriter:
    """Keeps one run directory up to date with a recorder's rows and the logged scalars.

    name: the run's label in reports (default: the folder's name); config: anything
    JSON-ready describing the run; resume: continue a run already in ``run_dir`` (its rows
    are kept up to the step where recording starts again); overwrite: replace it.
    callbacks: gradlab.callbacks.Callback trackers (W&B, TensorBoard) told what is written.
    """

    def __init__(self, run_dir, name: str | None = None, config: dict | None = None, resume: bool = False,
                 overwrite: bool = False, callbacks=(), flush_seconds: float = 30.0):  # fmt: skip
        if resume and overwrite:
            raise RecorderError("resume=True and overwrite=True exclude each other; choose one.")
        if config is not None and not isinstance(config, dict):
            raise RecorderError(f"config must be a dict of settings, not {type(config).__name__}.")
        self.run_dir = Path(run_dir)
        self.name = str(name) if name else self.run_dir.resolve().name
        self.config = dict(config or {})
        self.resume = resume
        self.overwrite = overwrite
        self.callbacks = CallbackList(list(callbacks))
        self.flush_seconds = flush_seconds
        self.spec: dict = {}
        self.prior_layers: pd.DataFrame | None = None  # rows of an earlier session (resume)
        self.prior_metrics: pd.DataFrame | None = None
        self.last_step = -1  # the highest step recorded or logged
        self.last_write = 0.0
        self._written = (0, 0)  # (layer rows, metrics rows) in the files now: skip a write that adds none
        self._lock = RunLock(self.run_dir)
        self._open = False

    # ------------------------------------------------------------------ lifecycle

    def open(self, model_info: dict, recorder_info: dict, env: dict) -> int:
        """Check and take the directory, write spec.json and status.json; returns the next
        step of a resumed run (0 for a new one)."""
        old = self._check_dir()
        self._lock.acquire()
        self._open = True
        try:
            if old is not None and self.overwrite:
                for f in OWN_FILES:
                    (self.run_dir / f).unlink(missing_ok=True)
                old = None
            if old is not None:
                self._load(old, model_info)
            self.spec = {
                "format_version": runs.FORMAT_VERSION,
                "name": self.name,
                "experiment": self.run_dir.resolve().parent.name,
                "source": runs.WATCH_SOURCE,
                "model": model_info,
                "config": self.config,
                "recorder": recorder_info,
                "env": env,
            }
            self._write_spec()
            self._write_status(runs.RUNNING)
        except BaseException:
            self._release()
            raise
        self.callbacks.on_start(self.run_dir, self.spec, resumed=old is not None)
        self.last_write = time.monotonic()
        return self.last_step + 1

    def describe(self, model_info: dict) -> None:
        """The model's description changed (depth order known after the first forward)."""
        self.spec["model"] = model_info
        self._write_spec()

    def logged(self, row: dict) -> None:
        """A metrics row was logged (written with the next flush)."""
        self.last_step = max(self.last_step, row["step"])
        self.callbacks.on_eval(self.run_dir, row)

    def due(self) -> bool:
        """Whether it is time to flush by the clock (a loop that records rarely still writes)."""
        return time.monotonic() - self.last_write >= self.flush_seconds

    def write(self, rows: pd.DataFrame, new_rows: pd.DataFrame, logged: list[dict]) -> None:
        """Rewrite layers.parquet (an earlier session's rows, then ``rows``), metrics.parquet
        (then ``logged``) and status.json; tell the trackers about ``new_rows``."""
        if not self._open:
            return
        self.last_write = time.monotonic()
        if (len(rows), len(logged)) == self._written:  # nothing new since the last write
            return
        if len(rows):
            self.last_step = max(self.last_step, int(rows["step"].max()))
        layers = _after_prior(self.prior_layers, rows)
        if len(layers):
            runs.write_parquet(self.run_dir / runs.LAYERS, layers)
        metrics = _after_prior(self.prior_metrics, pd.DataFrame(logged))
        if len(metrics):
            runs.write_parquet(self.run_dir / runs.METRICS, _metric_columns(metrics))
        self._write_status(runs.RUNNING)
        self._written = (len(rows), len(logged))
        if len(new_rows):
            self.callbacks.on_layers(self.run_dir, new_rows)

    def close(self, state: str, message: str = "", nonfinite: dict | None = None) -> None:
        """Mark the run ``state`` (done, failed, interrupted) and let the directory go."""
        if not self._open:
            return
        try:
            extra = {"nonfinite": nonfinite} if nonfinite else {}
            self._write_status(state, message, **extra)
            self.callbacks.on_end(self.run_dir, state, message)
        finally:
            self._release()

    # ------------------------------------------------------------------ helpers

    def _check_dir(self) -> dict | None:
        """The spec.json of a run already in run_dir (None: a new run); an error when the
        folder may not be written."""
        d = check_output_folder(self.run_dir, "run_dir", RunDirError)
        if (d / runs.SPEC).is_file():
            old = runs.read_json(d / runs.SPEC)
            if not (self.resume or self.overwrite):
                status = runs.read_json(d / runs.STATUS) if (d / runs.STATUS).is_file() else {}
                raise RunDirError(
                    f"{d} already holds a run ({status.get('state', 'pending')} at step {status.get('step', 0)}); "
                    "pass resume=True to continue it or overwrite=True to replace it, or choose another run_dir")
            return old
        if d.is_dir() and any(p.name != LOCK for p in d.iterdir()):
            raise RunDirError(f"{d} is not empty and holds no gradlab run; it is left untouched: choose another run_dir")
        return None

    def _load(self, old: dict, model_info: dict) -> None:
        before = [p["name"] for p in old.get("model", {}).get("parameters", [])]
        now = [p["name"] for p in model_info.get("parameters", [])]
        if before and before != now:
            raise RunDirError(f"{self.run_dir} holds a run of a model with other parameters; resume it with the same "
                              "model, or pass overwrite=True to replace it")  # fmt: skip
        d = self.run_dir
        self.prior_layers = runs.read_parquet(d / runs.LAYERS) if (d / runs.LAYERS).is_file() else None
        self.prior_metrics = runs.read_parquet(d / runs.METRICS) if (d / runs.METRICS).is_file() else None
        steps = [int(f["step"].max()) for f in (self.prior_layers, self.prior_metrics) if f is not None and len(f)]
        self.last_step = max(steps, default=-1)

    def _write_spec(self) -> None:
        runs.write_json(self.run_dir / runs.SPEC, self.spec)

    def _write_status(self, state: str, message: str = "", **extra) -> None:
        runs.write_status(self.run_dir, state, max(self.last_step, 0), 0, message, **extra)

    def _release(self) -> None:
        self._open = False
        self._lock.release()


def model_description(name: str, inner, targets) -> dict:
    """spec.json's ``model`` for a watched module: what the report needs to draw it along depth."""
    points = sorted(targets.points, key=lambda p: p.index)
    return {
        "name": name,
        "class": type(inner).__name__,
        "family": name,
        "label": name,
        "depth": sum(1 for p in points if p.kind in (CONV, FC) and p.role == "main"),
        "params": sum(p.numel() for p in inner.parameters() if p.requires_grad),
        "probe_points": [p.to_dict() for p in points],
        "parameters": [{"name": p.name, "index": p.index, "kind": p.kind, "shape": list(p.param.shape)}
                       for p in targets.params],  # fmt: skip
        "source": runs.WATCH_SOURCE,
    }


def _after_prior(prior: pd.DataFrame | None, rows: pd.DataFrame) -> pd.DataFrame:
    """An earlier session's rows before the first step of this one's, then this one's."""
    if prior is None or not len(prior):
        return rows
    if not len(rows):
        return prior
    return pd.concat([prior[prior["step"] < rows["step"].min()], rows], ignore_index=True)


def _metric_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """step first, then the scalars in the order they were first logged."""
    cols = ["step"] + [c for c in frame.columns if c != "step"]
    return frame[cols].astype({"step": "int64"})


def metrics_row(step: int, scalars: dict) -> dict:
    """{"step": step, **scalars} with every value a float; a clear error for anything else."""
    row = {"step": int(step)}
    for key, value in scalars.items():
        if key == "step" or not key:
            raise RecorderError(f"log() takes scalars by name, e.g. rec.log(step, train_loss=0.3); not {key!r}.")
        if hasattr(value, "item") and callable(value.item):  # a 0-dim tensor or numpy scalar (one host sync)
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecorderError(f"log(): {key}={value!r} is not a number; log scalars (floats, ints, 0-dim tensors).")
        row[key] = float(value)
    return row
