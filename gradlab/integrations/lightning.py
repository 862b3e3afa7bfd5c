"""gradlab in a PyTorch Lightning ``Trainer``: ``trainer = Trainer(callbacks=[GradlabCallback()])``.

The callback watches the LightningModule with the recorder (gradlab.watch) from the start
of training: each optimizer step is recorded on the recorder's schedule, right before the
optimizer steps (the gradients accumulated over micro-batches, unscaled under mixed
precision, after any gradient clipping), and what the module logs with ``self.log`` goes
into the run's metrics at Lightning's logging cadence and after each validation. Step
numbers line up with the layer rows': a training row is numbered by the optimizer step
whose batch it logged (the layer rows of that step), a validation row by the steps done
(the layer rows measuring those weights). A validation row holds what validation changed,
a training row leaves out validation values that did not change, and the end of the fit
adds a row only for values not logged yet.

The run directory defaults to ``<trainer.log_dir>/gradlab`` (``<default_root_dir>/gradlab``
without a logger), named after the logger ("lightning_logs/version_3"), with a suffix
(``gradlab-2``, "...-2") when a run is there already, so that two fits are two runs. The
callback's state goes into Lightning's checkpoints: ``fit(ckpt_path=...)`` continues the
same run directory with the update norms' previous weights and the first non-finite value.
A run that raises is marked failed. On several processes only global rank 0 records.
With ``loggers=True`` the layer statistics also go to the trainer's own loggers
(``trainer.loggers``: a TensorBoardLogger, a WandbLogger, ...) under the tags gradlab's
trackers use (``grad_norm/003.net.0.weight``), at the steps of their layer rows.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from gradlab.callbacks import Callback
from gradlab.integrations.common import checked_options, default_run, numbers, start_recorder, step_or_stop
from gradlab.tracking.common import finite, layer_key

__all__ = ["GradlabCallback"]


class GradlabCallback(pl.Callback):
    """Records gradient flow of the module being fit into a gradlab run directory.

    run_dir: where the run directory goes (default: see the module docstring); loggers:
    also log the layer statistics through ``trainer.loggers``; every other
    keyword is the recorder's (``every``, ``stats``, ``include``, ``exclude``, ``name``,
    ``config``, ``callbacks`` for W&B/TensorBoard trackers, ...), checked here;
    ``tensorboard=DIR`` also writes TensorBoard event files under DIR; ``findings=`` runs
    gradlab's rules at each flush as gradlab.watch does, and its "stop" action ends the fit
    through ``trainer.should_stop``, the run marked interrupted by the finding.
    """

    def __init__(self, run_dir: str | Path | None = None, loggers: bool = False, **recorder_options):
        self.run_dir = run_dir
        self.loggers = bool(loggers)
        self.options = checked_options(recorder_options, "GradlabCallback")
        self.recorder = None
        self.restored: dict | None = None  # a checkpoint's state, applied when training starts
        self._new_fit()

    def _new_fit(self) -> None:
        self.stopped_by = None  # the FindingStop that ended the fit
        self._logged_step = -1  # the last optimizer step a training row was logged for
        self._last: dict[str, float] = {}  # the values of the rows logged so far, by name
        self._eval_keys: set[str] = set()  # names whose values came from validation
        self._row_step, self._row = -1, {}  # the metrics row being gathered (a step's rows merge)

    # ------------------------------------------------------------------ lifecycle

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # (not on_fit_start: a fit resumed from a checkpoint has its global step only here)
        if not trainer.is_global_zero:
            return
        self._new_fit()
        state, self.restored = self.restored, None
        options = self.options
        if state:
            run_dir, name = Path(state["run_dir"]), state["name"]
        elif self.run_dir is not None:
            run_dir, name = Path(self.run_dir), None
        else:
            folder, label, experiment = _default_place(trainer)
            run_dir, name = default_run(folder, label)
            if experiment and "experiment" not in options:
                options = {**options, "experiment": experiment}
        if self.loggers and trainer.loggers:
            options = {**options, "callbacks": [*options.get("callbacks", ()), TrainerLoggers(trainer.loggers)]}
        self.recorder = start_recorder(pl_module, run_dir, trainer.global_step, options, name,
                                       resume=bool(state) or None)  # fmt: skip
        if state:
            self.recorder.load_state_dict(state["recorder"])

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recorder is not None:
            self._log(trainer.global_step, trainer, "end")
            self._emit()
            self.recorder.stop(self.stopped_by)
            self.recorder = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.recorder is not None:
            self._emit()
            self.recorder.stop(exception)
            self.recorder = None

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the run directory, its name and the recorder's state (its
        rows are flushed to disk first)."""
        if self.recorder is None:
            return dict(self.restored or {})
        self.recorder.flush()
        return {"run_dir": str(self.recorder.run_dir), "name": self.recorder.run_name,
                "recorder": self.recorder.state_dict()}  # fmt: skip

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored = dict(state_dict) or None

    # ------------------------------------------------------------------ steps and metrics

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        if self.recorder is not None and self.stopped_by is None:
            self.stopped_by = step_or_stop(self.recorder, trainer.global_step)
            if self.stopped_by is not None:
                trainer.should_stop = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step - 1  # the optimizer step just taken (none yet within an accumulation)
        if self.recorder is not None and step > self._logged_step and trainer.global_step % max(
                trainer.log_every_n_steps, 1) == 0:  # fmt: skip
            self._logged_step = step
            self._log(step, trainer, "train")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recorder is not None and not trainer.sanity_checking:
            self._log(trainer.global_step, trainer, "eval")

    def _log(self, step: int, trainer: pl.Trainer, phase: str) -> None:
        """The module's logged values as a row at ``step``: in training all but unchanged
        validation values, after validation ("eval") and at the end only changed ones."""
        last = self._last
        scalars = {k: v for k, v in numbers(trainer.callback_metrics).items()
                   if last.get(k) != v or phase == "train" and k not in self._eval_keys}  # fmt: skip
        if phase == "eval":
            self._eval_keys.update(scalars)
        if max(step, 0) != self._row_step:
            self._emit()
            self._row_step = max(step, 0)
        self._row.update(scalars)
        self._last.update(scalars)

    def _emit(self) -> None:
        """Log the row gathered for its step (validation and training rows of one step merge)."""
        if self._row:
            self.recorder.log(self._row_step, **self._row)
            self._row = {}


class TrainerLoggers(Callback):
    """The recorder's layer rows, as they are written, to Lightning loggers (``loggers=True``)."""

    def __init__(self, loggers):
        self.loggers = list(loggers)

    def on_layers(self, run_dir: Path, frame) -> None:
        for step, rows in frame.groupby("step"):
            metrics = {layer_key(stat, index, layer): float(value)
                       for stat, index, layer, value in zip(rows["stat"], rows["index"], rows["layer"], rows["value"])
                       if finite(value)}  # fmt: skip
            for logger in self.loggers:
                logger.log_metrics(metrics, step=int(step))


def _default_place(trainer: pl.Trainer) -> tuple[Path, str, str | None]:
    """(folder, label, experiment) of a run with no run_dir: the logger's versioned folder,
    "name/version" and the logger's folder above its versions; or the trainer's root folder
    and its name (experiment None: the folder holding the run, as for any run)."""
    logger = trainer.logger
    if logger is not None and trainer.log_dir:
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        log_dir = Path(trainer.log_dir)
        return log_dir, f"{logger.name}/{version}" if logger.name else version, log_dir.parent.name
    root = Path(trainer.default_root_dir)
    return root, root.resolve().name, None
