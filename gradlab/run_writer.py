"""The one writer of a run directory, for gradlab's trainer and for anyone's loop.

It never imports torch: it sits with the run directory's contract (gradlab.runs,
gradlab.run_tables), below the recorder and the trainer that both write through it.

``gradlab.watch(model, run_dir=...)`` makes one; gradlab's trainer makes one with its
run's fields (gradlab.train) and hands it to the recorder, so a zoo run is a watched run
plus a training loop. It writes spec.json (the model's description, the settings,
versions; the trainer adds its seed, run, data and recipe), status.json, and the two
append-only tables (gradlab.run_tables): metrics (scalars by name, one row per ``log``)
and layers (the recorder's rows). A write adds only the rows since the last one, so
neither its cost nor the memory held grows with the run; a crash loses at most those
rows, and the directory is always readable. Trackers (gradlab.callbacks) hear of
everything written. There is no checkpoint here: the trainer owns its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from gradlab import run_tables, runs
from gradlab.callbacks import CallbackList
from gradlab.errors import RecorderError, RunDirError, RunLockedError
from gradlab.file_io import read_json, write_json
from gradlab.output_folders import check_output_folder
from gradlab.run_lock import LOCK, RunLock

__all__ = ["RunWriter", "metrics_row"]

TABLES = (runs.METRICS, runs.LAYERS)


class RunWriter:
    """Keeps one run directory up to date.

    name: the run's label in reports (default: the folder's name); config: anything
    JSON-ready describing the run; resume: continue a run already in ``run_dir``;
    overwrite: replace it; callbacks: trackers (W&B, TensorBoard) told what is written;
    flush_seconds: how often a recorder writes by the clock (None: never, only when its
    buffer fills or it is asked to). For gradlab's trainer: source and total_steps, and
    set_run() once its parts are built.
    """

    def __init__(self, run_dir, *, name: str | None = None, config: dict | None = None, resume: bool = False,
                 overwrite: bool = False, callbacks=(), flush_seconds: float | None = 30.0,
                 source: str = runs.WATCH_SOURCE, total_steps: int = 0, experiment: str | None = None):  # fmt: skip
        if resume and overwrite:
            raise RecorderError("resume=True and overwrite=True exclude each other; choose one.")
        if config is not None and not isinstance(config, dict):
            raise RecorderError(f"config must be a dict of settings, not {type(config).__name__}.")
        self.run_dir = Path(run_dir)
        self.name = str(name) if name else self.run_dir.resolve().name
        self.experiment = str(experiment) if experiment else None  # None: the folder holding run_dir
        self.config = dict(config or {})
        self.resume = resume
        self.overwrite = overwrite
        self.callbacks = CallbackList(list(callbacks))
        self.flush_seconds = flush_seconds
        self.source = source
        self.total_steps = int(total_steps)
        self.fields: dict = {}  # spec.json entries the trainer adds (set_run)
        self.fixed_model: dict | None = None  # the zoo's description of the model, kept as given
        self.spec: dict = {}
        self.last_step = -1  # the highest step given (logged or added), written or not
        self.written_step = -1  # the highest step whose rows are on disk
        self.last_write = 0.0
        self._metrics: list[dict] = []  # rows not yet written
        self._layers: list[pd.DataFrame] = []
        self._tables: dict[str, run_tables.TableWriter] = {}
        self._prior: dict[str, int] = {}  # table -> the last step an earlier session wrote (-1: none)
        self._lock = RunLock(self.run_dir)
        self._old: dict | None = None  # spec.json of the run found in run_dir
        self._claimed = False
        self._open = False
        self.resumed = False  # open() found a run to continue

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "RunWriter":
        self.claim()
        return self

    def __exit__(self, *exc) -> None:
        self._release()  # (closed already, unless something failed on the way)

    def set_run(self, model: dict, fields: dict) -> None:
        """gradlab's trainer, once its parts are built: the zoo's description of the model
        (kept as given) and the spec.json entries it adds (seed, run, data, recipe, env)."""
        self.fixed_model, self.fields = model, dict(fields)

    def claim(self) -> dict | None:
        """Check the folder and take its lock; returns the spec.json of the run already there
        (None: a new run). Called by open() if not before."""
        if not self._claimed:
            self._old = self._check_dir()
            self._lock.acquire()
            self._claimed = True
        return self._old

    def open(self, model: dict, recorder: dict | None, env: dict) -> int:
        """Write spec.json (``model``: the watched model's description, unless the owner fixed
        one; ``recorder``: its settings) and start the tables; returns the next step of a
        resumed run (0 for a new one)."""
        old = self.claim()
        try:
            if old is not None and self.overwrite:
                for table in TABLES:
                    run_tables.remove(self.run_dir / table)
                for f in (runs.SPEC, runs.STATUS, *(p.name for p in self.run_dir.glob("checkpoint*.pt"))):
                    (self.run_dir / f).unlink(missing_ok=True)
                old = None
            if old is not None:
                self._check_same_model(old, model)
            self.resumed = old is not None
            self._tables = {t: run_tables.TableWriter(self.run_dir / t) for t in TABLES}
            self._prior = {t: self._tables[t].max_step() if old else -1 for t in TABLES}
            self.last_step = self.written_step = max(self._prior.values())
            self.spec = {
                "format_version": runs.FORMAT_VERSION,
                "name": self.name,
                "experiment": self.experiment or (old or {}).get("experiment") or self.run_dir.resolve().parent.name,
                "source": self.source,
                "model": self.fixed_model if self.fixed_model is not None else model,
                "config": self.config,
                "recorder": recorder,
                "env": env,
                **self.fields,
            }
            write_json(self.run_dir / runs.SPEC, self.spec)
            self._open = True
        except BaseException:
            self._release()
            raise
        self.last_write = time.monotonic()
        return self.last_step + 1

    def restart_at(self, step: int, metrics_from: int | None = None) -> None:
        """The run goes on from ``step`` (a checkpoint, a resumed fit): layer rows of later
        steps, and metrics rows from ``metrics_from`` on (default ``step``), are dropped."""
        self._keep_before(runs.LAYERS, step)
        self._keep_before(runs.METRICS, step if metrics_from is None else metrics_from)
        self.last_step = self.written_step = step - 1

    def begin(self, step: int, metrics_from: int | None = None) -> None:
        """The owner's loop starts at ``step`` (0, or a checkpoint's): rows of later steps go
        (restart_at), status.json says running there, and the trackers hear of it."""
        if step:
            self.restart_at(step, metrics_from)
        self.status(runs.RUNNING, step)
        self.started(resumed=step > 0)

    def started(self, resumed: bool) -> None:
        """Tell the trackers the run (re)starts, once its status is written."""
        self.callbacks.on_start(self.run_dir, self.spec, resumed=resumed)

    def describe(self, model: dict) -> None:
        """The watched model's description changed (its depth order, after the first forward)."""
        if self.fixed_model is None and self._open:
            self.spec["model"] = model
            write_json(self.run_dir / runs.SPEC, self.spec)

    def log(self, row: dict) -> None:
        """A metrics row (step, then scalars by name), written with the next write()."""
        self._metrics.append(row)
        self.last_step = max(self.last_step, int(row["step"]))
        self.callbacks.on_eval(self.run_dir, row)

    def add_layers(self, rows: pd.DataFrame) -> None:
        """The recorder's new rows, written with the next write()."""
        if len(rows):
            self._layers.append(rows)
            self.last_step = max(self.last_step, int(rows["step"].max()))

    def due(self) -> bool:
        """Whether it is time to write by the clock (a loop that records rarely still writes)."""
        return self.flush_seconds is not None and time.monotonic() - self.last_write >= self.flush_seconds

    def write(self) -> bool:
        """Append the rows given since the last write to the tables; tell the trackers of
        the layer rows. Returns whether there were any."""
        if not self._open:
            return False
        self.last_write = time.monotonic()
        wrote = bool(self._metrics or self._layers)
        if self._metrics:
            new = _metric_columns(pd.DataFrame(self._metrics))
            self._keep_before(runs.METRICS, int(new["step"].min()))
            self._tables[runs.METRICS].append(new)
            self._metrics = []
            self.written_step = max(self.written_step, int(new["step"].max()))
        if self._layers:
            new = self._layers[0] if len(self._layers) == 1 else pd.concat(self._layers, ignore_index=True)
            self._keep_before(runs.LAYERS, int(new["step"].min()))
            self._tables[runs.LAYERS].append(new)
            self._layers = []
            self.written_step = max(self.written_step, int(new["step"].max()))
            self.callbacks.on_layers(self.run_dir, new)
        return wrote

    def status(self, state: str, step: int | None = None, message: str = "", **extra) -> None:
        """Write status.json (``step``: how far the run got; default the last step written)."""
        if self._open:
            runs.write_status(self.run_dir, state, max(self.last_step, 0) if step is None else step,
                              self.total_steps, message, **extra)  # fmt: skip

    def close(self, state: str, step: int | None = None, message: str = "", **extra) -> None:
        """Write what is left, compact the tables, mark the run ``state`` and let the
        directory go. When the last write fails (a full disk), the run is marked failed at
        the last step on disk, never ``state``, and the error goes on."""
        if not self._open:
            self._release()
            return
        try:
            try:
                self.write()
                for table in self._tables.values():
                    table.compact()
            except BaseException as e:
                self.fail(e)
                raise
            self.status(state, step, message, **extra)
            self.callbacks.on_end(self.run_dir, state, message)
        finally:
            self._release()

    def fail(self, error: BaseException) -> None:
        """Mark the run failed by ``error`` at the last step whose rows are on disk (rows
        given but not written are lost); quietly, if even status.json cannot be written."""
        message = f"{type(error).__name__}: {error}"
        try:
            self.status(runs.FAILED, max(self.written_step, 0), message)
            self.callbacks.on_end(self.run_dir, runs.FAILED, message)
        except Exception:
            pass

    def rows(self, table: str, since: int) -> pd.DataFrame | None:
        """The rows of ``table`` from step ``since`` on, as written so far."""
        frame = run_tables.read(self.run_dir / table)
        return None if frame is None else frame[frame["step"] >= since].reset_index(drop=True)

    # ------------------------------------------------------------------ helpers

    def _keep_before(self, table: str, step: int) -> None:
        """An earlier session's rows from ``step`` on are replaced by this one's (rows are kept
        up to where this session starts again); this session's own are left as written."""
        if step <= self._prior[table]:
            self._tables[table].keep_before("step", step)
            self._prior[table] = step - 1

    def _check_dir(self) -> dict | None:
        """The spec.json of a run already in run_dir (None: a new run); an error when the
        folder may not be written."""
        d = check_output_folder(self.run_dir, "run_dir", RunDirError)
        owner = self._lock.holder()
        if owner is not None:  # another live process writes it: neither resume nor overwrite may
            raise RunLockedError(self._lock.busy(owner))
        if (d / runs.SPEC).is_file():
            old = read_json(d / runs.SPEC)
            if not (self.resume or self.overwrite):
                status = runs.read_status(d)
                raise RunDirError(
                    f"{d} already holds a run ({status.get('state', 'pending')} at step {status.get('step', 0)}); "
                    "pass resume=True to continue it or overwrite=True to replace it, or choose another run_dir")
            return old
        if runs.lost_spec(d):
            raise RunDirError(runs.lost_spec(d))
        if d.is_dir() and any(p.name not in (LOCK, runs.SUBMITTED) for p in d.iterdir()):  # gradlab's own
            raise RunDirError(f"{d} is not empty and holds no gradlab run; it is left untouched: choose another run_dir")
        return None

    def _check_same_model(self, old: dict, model: dict) -> None:
        before = [p["name"] for p in old.get("model", {}).get("parameters", [])]
        now = [p["name"] for p in (model or {}).get("parameters", [])]
        if before and now and before != now:
            raise RunDirError(f"{self.run_dir} holds a run of a model with other parameters; resume it with the same "
                              "model, or pass overwrite=True to replace it")  # fmt: skip

    def _release(self) -> None:
        self._open = False
        if self._claimed:
            self._claimed = False
            self._lock.release()


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
