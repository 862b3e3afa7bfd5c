"""gradlab in a Hugging Face ``transformers.Trainer``: ``Trainer(..., callbacks=[GradlabCallback()])``.

The callback watches the model with the recorder (gradlab.watch) from the start of
training: each optimizer step is recorded on the recorder's schedule, right before the
optimizer steps (the gradients accumulated over micro-batches; after clipping when
``max_grad_norm`` is set, as the optimizer sees them), and what the Trainer logs (loss,
learning rate, its own total grad_norm, evaluation metrics) goes into the run's metrics at
its logging cadence. Step numbers line up with the layer rows': a training log (its loss and
grad_norm, of the optimizer step just taken) is numbered by that step, as its layer rows
are; an evaluation by the steps done, as the layer rows measuring those weights. The run
directory defaults to ``<output_dir>/gradlab``, named after ``run_name`` or the output
folder, with a suffix (``gradlab-2``, "...-2") when a run is there already, so that two
trainings are two runs (a training resumed from a checkpoint continues the last of them); it is the one ``gradlab report`` draws. The Trainer has no event
for a failed run: a run that raises is closed when the process ends
(gradlab.recorder.unstopped), failed by the exception that ended it. On several processes
only the main one records.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from gradlab.integrations.common import checked_options, default_run, numbers, start_recorder, step_or_stop

__all__ = ["GradlabCallback"]


class GradlabCallback(TrainerCallback):
    """Records gradient flow of the model being trained into a gradlab run directory.

    run_dir: where the run directory goes (default: see the module docstring); every other
    keyword is the recorder's (``every``, ``stats``, ``include``, ``exclude``, ``name``,
    ``config``, ``callbacks`` for trackers, ...), checked here;
    ``tensorboard=DIR`` also writes TensorBoard event files under DIR; ``findings=`` runs
    gradlab's rules at each flush as gradlab.watch does, and its "stop" action ends training
    through ``control.should_training_stop``, the run marked interrupted by the finding.
    """

    def __init__(self, run_dir: str | Path | None = None, **recorder_options):
        self.run_dir = run_dir
        self.options = checked_options(recorder_options, "GradlabCallback")
        self.recorder = None
        self.stopped_by = None  # the FindingStop that ended training

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and model is not None:
            if self.run_dir is not None:
                run_dir, name = Path(self.run_dir), None
            else:
                output = Path(args.output_dir or ".")
                run_dir, name = default_run(output, args.run_name or output.resolve().name, state.global_step > 0)
            self.recorder = start_recorder(model, run_dir, state.global_step, self.options, name)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.recorder is not None and self.stopped_by is None:
            self.stopped_by = step_or_stop(self.recorder, state.global_step)
            if self.stopped_by is not None:
                control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.recorder is not None:
            scalars = numbers(logs)
            if scalars:  # a training log ("loss") is of the step just taken: global_step counts it done
                step = state.global_step - 1 if "loss" in scalars else state.global_step
                self.recorder.log(max(step, 0), **scalars)

    def on_train_end(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.stop(self.stopped_by)
            self.recorder = None
