"""TensorBoard tracking: event files that `tensorboard --logdir DIR` shows, no account needed.

One folder per gradlab run, DIR/<experiment>/<run name>, so TensorBoard lists runs by
experiment. Evaluation scalars go under metrics/ (metrics/test_err, ...), per-layer
statistics under the same names as in W&B (grad_norm/007.layer1.0.conv1.weight), all
against gradlab's own step. A resumed run appends a new event file to the same folder and
hides the points the interrupted process logged after its last checkpoint, so every curve
matches metrics.parquet and layers.parquet; a run trained afresh under the same name hides
the older one. torch.utils.tensorboard is imported when a run starts, not when
gradlab.tracking is.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path

import pandas as pd

from gradlab.callbacks import Callback
from gradlab.tracking.common import TrackingError, finite, layer_key
from gradlab.output_folders import check_output_folder

METRICS_GROUP = "metrics"


def check_log_dir(log_dir: str | Path) -> Path:
    """The folder for --tensorboard, checked before any training: tensorboard installed, and
    the path (or a folder above it) not an existing file. Returns it as an absolute path."""
    path = Path(log_dir).expanduser().absolute()
    if importlib.util.find_spec("tensorboard") is None:
        raise TrackingError("--tensorboard needs the tensorboard package; install it with "
                            "`pip install 'gradlab[tensorboard]'` (or `pip install tensorboard`)")
    check_output_folder(path, "--tensorboard", TrackingError)
    return path


def run_folder(log_dir: Path, spec: dict, run_dir: Path) -> Path:
    """<log_dir>/<experiment>/<run name>, from the spec or else from the run directory's place."""
    run_dir = Path(run_dir)
    return Path(log_dir) / (spec.get("experiment") or run_dir.parent.name) / (spec.get("name") or run_dir.name)


class TensorBoardTracker(Callback):
    """Writes each run's scalars and layer statistics to TensorBoard event files under `log_dir`."""

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self.writer = None
        self.last_step = 0

    def on_start(self, run_dir: Path, spec: dict, resumed: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.close()  # the same tracker goes on to the next run of a compare
        folder = run_folder(self.log_dir, spec, run_dir)
        had_events = any(folder.glob("events.out.tfevents.*"))
        start = _resume_step(run_dir) if resumed else 0
        self.last_step = start or 0
        # TensorBoard hides what earlier processes logged at or after `start` (the steps an
        # interrupted run trains again, or all of a run trained afresh under the same name):
        # its Python reader on this session-start event, its data server per curve once a step
        # goes back, which the replayed evaluation and the re-recorded layer steps do
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=start)
        with self._closing_on_error():
            if not resumed or not had_events:
                self.writer.add_text("spec", "```json\n" + json.dumps(spec, indent=2, default=str) + "\n```", 0)
            if resumed and start is not None:
                self._replay_checkpoint_eval(run_dir, start)
            self.writer.flush()

    def on_eval(self, run_dir: Path, row: dict) -> None:
        if self.writer is None:
            return
        with self._closing_on_error():
            self._log_eval(row)
            self.writer.flush()  # at the evaluation cadence, so a live dashboard keeps up

    def on_layers(self, run_dir: Path, frame: pd.DataFrame) -> None:
        if self.writer is None or frame.empty:
            return
        with self._closing_on_error():
            for step, stat, index, layer, value in zip(frame["step"].to_numpy(), frame["stat"], frame["index"],
                                                       frame["layer"], frame["value"].to_numpy()):
                if finite(value):
                    self.writer.add_scalar(layer_key(stat, index, layer), float(value), global_step=int(step))
                    self.last_step = max(self.last_step, int(step))

    def on_finding(self, run_dir: Path, finding) -> None:
        """A text entry under findings/<rule>, at the finding's first step."""
        if self.writer is None:
            return
        with self._closing_on_error():
            text = (f"**{finding.severity}** {finding.summary} ({finding.when}; {finding.where_text})\n\n"
                    f"{finding.evidence}\n\nTry: {finding.suggestion}")
            self.writer.add_text(f"findings/{finding.rule}", text, finding.first_step or 0)
            self.writer.flush()

    def on_end(self, run_dir: Path, state: str, message: str) -> None:
        if self.writer is None:
            return
        try:
            self.writer.add_text("end", f"**{state}**" + (f": {message}" if message else ""), self.last_step)
        finally:
            self.close()

    def close(self) -> None:
        """Flush and close the event file of the current run, if one is open."""
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()

    def _log_eval(self, row: dict) -> None:
        step = int(row["step"])
        for name, value in row.items():
            if name != "step" and finite(value):
                self.writer.add_scalar(f"{METRICS_GROUP}/{name}", float(value), global_step=step)
        self.last_step = max(self.last_step, step)

    def _replay_checkpoint_eval(self, run_dir: Path, step: int) -> None:
        """The evaluation at the checkpoint's step: purged with the rest, kept by the run, not repeated."""
        from gradlab import run_tables
        from gradlab.runs import METRICS

        metrics = run_tables.read(Path(run_dir) / METRICS)
        if metrics is not None:
            for row in metrics[metrics["step"] == step].to_dict("records"):
                self._log_eval(row)

    @contextlib.contextmanager
    def _closing_on_error(self):
        """Close the event file when a call fails: CallbackList then switches this tracker off
        for the run, and no on_end would close it."""
        try:
            yield
        except Exception:
            self.close()
            raise

    def __getstate__(self) -> dict:
        """Picklable for worker processes and submitit jobs: an open writer stays behind."""
        return {**self.__dict__, "writer": None}


def _resume_step(run_dir: Path) -> int | None:
    """The step a resumed run restarts from: the trainer writes it to status.json just before on_start."""
    from gradlab.runs import STATUS, read_status

    step = read_status(run_dir).get("step") if (Path(run_dir) / STATUS).exists() else None
    return int(step) if step is not None else None
