"""gradlab in a Hugging Face ``transformers.Trainer``: ``Trainer(..., callbacks=[GradlabCallback()])``.

The callback watches the model with the recorder (gradlab.watch) from the start of
training: each optimizer step is recorded on the recorder's schedule, right before the
optimizer steps (the gradients accumulated over micro-batches; after clipping when
``max_grad_norm`` is set, as the optimizer sees them), and what the Trainer logs (loss,
learning rate, its own total grad_norm, evaluation metrics) goes into the run's metrics at
its logging cadence. The run directory (default ``<output_dir>/gradlab``) is the one
``gradlab report`` draws. The Trainer has no event for a failed run: a run that raises
stays "running", which gradlab shows as crashed once the process is gone. On several
processes only the main one records.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from gradlab.integrations.common import numbers, start_recorder, step_or_stop

__all__ = ["GradlabCallback"]


class GradlabCallback(TrainerCallback):
    """Records gradient flow of the model being trained into a gradlab run directory.

    run_dir: where the run directory goes (default: ``gradlab`` under the Trainer's
    ``output_dir``); every other keyword is the recorder's (``every``, ``stats``,
    ``include``, ``exclude``, ``name``, ``config``, ``callbacks`` for trackers, ...);
    ``tensorboard=DIR`` also writes TensorBoard event files under DIR; ``findings=`` runs
    gradlab's rules at each flush as gradlab.watch does, and its "stop" action ends training
    through ``control.should_training_stop``, the run marked interrupted by the finding.
    """

    def __init__(self, run_dir: str | Path | None = None, **recorder_options):
        self.run_dir = run_dir
        self.options = dict(recorder_options)
        self.recorder = None
        self.stopped_by = None  # the FindingStop that ended training

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and model is not None:
            default = Path(args.output_dir or ".") / "gradlab"
            self.recorder = start_recorder(model, self.run_dir, default, state.global_step, self.options)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.recorder is not None and self.stopped_by is None:
            self.stopped_by = step_or_stop(self.recorder, state.global_step)
            if self.stopped_by is not None:
                control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.recorder is not None:
            scalars = numbers(logs)
            if scalars:
                self.recorder.log(state.global_step, **scalars)

    def on_train_end(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.stop(self.stopped_by)
            self.recorder = None
