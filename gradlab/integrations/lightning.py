"""gradlab in a PyTorch Lightning ``Trainer``: ``trainer = Trainer(callbacks=[GradlabCallback()])``.

The callback watches the LightningModule with the recorder (gradlab.watch) from the start
of ``fit``: each optimizer step is recorded on the recorder's schedule, right before the
optimizer steps (the gradients accumulated over micro-batches, unscaled under mixed
precision, after any gradient clipping), and what the module logs with ``self.log`` goes
into the run's metrics at Lightning's logging cadence and after each validation. The run
directory (default ``<trainer.log_dir>/gradlab``) is the one ``gradlab report`` draws; a
run that raises is marked failed. On several processes only global rank 0 records.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from gradlab.integrations.common import numbers, start_recorder, step_or_stop

__all__ = ["GradlabCallback"]


class GradlabCallback(pl.Callback):
    """Records gradient flow of the module being fit into a gradlab run directory.

    run_dir: where the run directory goes (default: ``gradlab`` under the trainer's log
    directory); every other keyword is the recorder's (``every``, ``stats``, ``include``,
    ``exclude``, ``name``, ``config``, ``callbacks`` for W&B/TensorBoard trackers, ...);
    ``tensorboard=DIR`` also writes TensorBoard event files under DIR; ``findings=`` runs
    gradlab's rules at each flush as gradlab.watch does, and its "stop" action ends the fit
    through ``trainer.should_stop``, the run marked interrupted by the finding.
    """

    def __init__(self, run_dir: str | Path | None = None, **recorder_options):
        self.run_dir = run_dir
        self.options = dict(recorder_options)
        self.recorder = None
        self.stopped_by = None  # the FindingStop that ended the fit

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        default = Path(trainer.log_dir or trainer.default_root_dir) / "gradlab"
        self.recorder = start_recorder(pl_module, self.run_dir, default, trainer.global_step, self.options)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        if self.recorder is not None and self.stopped_by is None:
            self.stopped_by = step_or_stop(self.recorder, trainer.global_step)
            if self.stopped_by is not None:
                trainer.should_stop = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        if self.recorder is not None and trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            self._log(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recorder is not None and not trainer.sanity_checking:
            self._log(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recorder is not None:
            self._log(trainer)
            self.recorder.stop(self.stopped_by)
            self.recorder = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.recorder is not None:
            self.recorder.stop(exception)
            self.recorder = None

    def _log(self, trainer: pl.Trainer) -> None:
        scalars = numbers(trainer.callback_metrics)
        if scalars:
            self.recorder.log(trainer.global_step, **scalars)
