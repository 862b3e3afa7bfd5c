"""One run: a model trained on one dataset with one seed, into a run directory.

A zoo run is a watched run plus a training loop: the parts come from gradlab.train.parts,
the recorder is ``gradlab.watch`` writing through the run directory's one writer
(gradlab.run_writer), checkpoints hold what gradlab.train.state lists, and how a
run ends is gradlab.train.outcome's to word. The loop knows nothing of W&B, SLURM or
plotting: those plug in as callbacks of the writer. Between evaluations nothing leaves the
device: the running loss and error, the divergence flag and the recorder's buffers are
tensors.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gradlab import data as datasets
from gradlab import runs
from gradlab.callbacks import Callback
from gradlab.config import RunSpec, validate_recipe
from gradlab.distributed import World
from gradlab.environment import resolve_device
from gradlab.errors import DiskFullError, RunInterrupted
from gradlab.interrupt import StopNow, StopRequest, graceful_stop
from gradlab.memory import check_fits
from gradlab.output_folders import check_output_folder
from gradlab.progress import progress_bar
from gradlab.run_writer import RunWriter
from gradlab.train.evaluation import autocast, metrics_row
from gradlab.train.outcome import diverged_message, failure
from gradlab.train.parts import RunParts, build_parts, start_recording
from gradlab.train.run_fields import check_existing
from gradlab.train.state import restore, save
from gradlab.train.sums import RunningSums

__all__ = ["RunResult", "Trainer", "deterministic", "train"]

STOP_CHECK_EVERY = 10  # data-parallel runs: steps between agreements on a stop request


@dataclass
class RunResult:
    run_dir: Path
    state: str  # done | diverged | ...
    step: int
    message: str = ""


@contextlib.contextmanager
def deterministic(on: bool):
    """Deterministic algorithms for the duration of a run, restored afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


class Trainer:
    """One run of ``spec``: ``run()`` trains to the end or to divergence (or returns a finished
    run untouched); ``train_step`` takes one step, for benchmarks that step by hand."""

    def __init__(self, spec: RunSpec, runs_dir: str | Path = "runs", progress: bool | None = None,
                 callbacks: list[Callback] | None = None, dataset: datasets.Dataset | None = None,
                 handoff: tuple[int, ...] = ()):  # fmt: skip
        self.spec = spec
        # signals that stop the run at a step boundary and, after the checkpoint, go on to the
        # handler installed before (a launcher's: submitit requeues the job; gradlab.interrupt)
        self.handoff = tuple(handoff)
        self.recipe = validate_recipe(spec.recipe)
        self.run_dir = runs.run_dir_for(spec, check_output_folder(runs_dir, "--runs-dir"))
        self.existing = check_existing(self.run_dir, spec)
        # data-parallel under torchrun: rank 0 alone writes files and runs callbacks (gradlab.distributed)
        self.world = World.from_env()
        self.world.check_batch(self.recipe.batch_size)
        self.progress = (sys.stderr.isatty() if progress is None else progress) and self.world.main
        self.callbacks = list(callbacks or []) if self.world.main else []
        self.device = self.world.device_for(resolve_device(spec.device))
        self.cuda = self.device.type == "cuda"
        # before anything is built: a run that cannot fit is refused, not left to exhaust the machine
        check_fits(spec, self.device, runs_at_once=1 if self.cuda else self.world.size)
        self._dataset = dataset
        self._pretrained: dict | None = None  # fine-tuning: the state dict to start from (fetched in run())
        self._parts: RunParts | None = None
        self.writer: RunWriter | None = None
        self.recorder = None
        self.sums = RunningSums(self.device)
        self.step = 0
        self.last_checkpoint: int | None = None
        self.time_s = 0.0
        self.compile_s: float | None = None  # --compile: time of the first compiled step

    @property
    def parts(self) -> RunParts:
        """The run's data, model, optimizer, schedule and forward, built on first use."""
        if self._parts is None:
            self._parts = build_parts(self.spec, self.recipe, self.world, self.device, self._dataset, self._pretrained)
            self._pretrained = None
        return self._parts

    def start_recorder(self, writer: RunWriter | None = None):
        """Watch the model if the recipe records, writing through ``writer`` (rank 0's; None:
        nothing written); a writer without a recorder is opened here."""
        self.recorder = start_recording(self.spec, self.recipe, self.world, self.parts, writer)
        return self.recorder

    # -- the run -------------------------------------------------------------------------
    def run(self) -> RunResult:
        if self.spec.model.weights and not any(self.run_dir.glob("checkpoint*.pt")):
            from gradlab import finetune

            self._pretrained = finetune.load_state(self.spec.model)  # before the run directory exists
        self.writer = run_writer(self.run_dir, self.spec, self.callbacks) if self.world.main else None
        with self.world.started(self.device), self.writer or contextlib.nullcontext():
            status = runs.read_status(self.run_dir) if self.existing is not None else {}
            if self.existing is not None and runs.finished_intact(self.run_dir):
                return RunResult(self.run_dir, status["state"], int(status.get("step", 0)), "already finished")
            with deterministic(self.spec.deterministic and not self.cuda), graceful_stop(self.handoff) as stop:
                return self._run(stop)

    def _run(self, stop: StopRequest) -> RunResult:
        parts, writer, bar = self.parts, self.writer, None
        try:
            rec = self.start_recorder(writer)
            self.step, self.time_s = restore(self.run_dir, self.spec.name, self.device, self.world, parts,
                                             self.sums, rec)  # fmt: skip
            self.last_checkpoint = self.step or None
            if writer is not None:  # rows written after the checkpoint belong to steps that run again
                writer.begin(self.step, metrics_from=self.step + 1)
            if self.step == 0:
                self._evaluate(0, None, float("nan"))
            bar = progress_bar(self.recipe.steps, self.spec.name, "step", self.progress, initial=self.step)
            return self._loop(bar, stop)
        except BaseException as e:
            state, message = failure(e, self.spec.name, self.step, self.last_checkpoint)
            with contextlib.suppress(DiskFullError):  # the writer marked it failed where status.json fits; a rerun resumes
                self._finish(state, message)
            if isinstance(e, StopNow):
                raise RunInterrupted(message, e.exit_code) from None
            raise
        finally:
            if bar is not None:
                bar.close()
            close = getattr(parts.loader, "close", None)  # a streaming loader's worker processes
            if close is not None:
                close()

    def _loop(self, bar, stop: StopRequest) -> RunResult:
        recipe, sums, rec, total = self.recipe, self.sums, self.recorder, self.recipe.steps
        if rec is not None:
            rec.set_step(self.step)
        interval_start, interval_images = time.perf_counter(), 0
        while self.step < total:
            step = self.step
            if self.spec.compile and self.compile_s is None and not (rec is not None and rec.recording):
                self.compile_s = timed(self.train_step, step, self.device)  # compiles: kept out of images/s
                interval_start += self.compile_s
                batch = 0
            else:
                batch = self.train_step(step)
            self.step = done = step + 1
            interval_images += batch
            if bar is not None:
                bar.update(1)
            if self.parts.lr.warming and done % recipe.warmup_check_every == 0:
                now = sums.totals(self.world)  # every rank takes the same decision
                self.parts.lr.observe(done, now["err_sum"] / max(now["count"], 1))
            if done % recipe.eval_every == 0 or done == total:
                elapsed = time.perf_counter() - interval_start
                self.time_s += elapsed
                stats = sums.totals(self.world)  # summed over ranks: the global batch's
                sums.restart()
                row = self._evaluate(done, stats, interval_images / max(elapsed, 1e-9))
                if bar is not None:
                    bar.set_postfix(loss=f"{row['train_loss']:.3f}", err=f"{row['train_err']:.1%}",
                                    test=f"{row['test_err']:.1%}", ips=f"{row['images_per_s']:.0f}")
                if stats["bad_step"] >= 0 or not math.isfinite(row["train_loss"]):
                    return self._diverged(int(stats["bad_step"]))
                interval_start, interval_images = time.perf_counter(), 0
            # every rank stops after the same step; data-parallel ranks agree every few steps only,
            # since each agreement is a round trip between the processes
            stopping = stop.requested if not self.world.enabled else (
                done % STOP_CHECK_EVERY == 0 and self.world.agree(stop.requested))
            if done % recipe.checkpoint_every == 0 or done == total:
                self._checkpoint()
                if self.recorder is not None and self.recorder.nonfinite is not None:  # as of that flush
                    return self._diverged(-1)
                if self.writer is not None and done < total:
                    self.writer.status(runs.RUNNING, done, **self._compile_status())
            elif stopping:
                self._checkpoint()
            if stopping and done < total:
                stop.hand_back()  # a job scheduler's signal: it requeues the job now (and exits)
                by = stop.name or "a signal to another process"
                raise RunInterrupted(f"{self.spec.name} stopped by {by} at step {done} after writing a "
                                     f"checkpoint; rerun the same command to resume", stop.exit_code)
        # also when the final checkpoint was there already (a process that died before writing
        # this): the rerun that resumes at the last step repairs the status
        self._finish(runs.DONE, **self._compile_status())
        return RunResult(self.run_dir, runs.DONE, self.step)

    def train_step(self, step: int) -> int:
        """One optimisation step at global step `step`; returns the (global) batch size.

        Nothing here waits for the device: statistics accumulate in device tensors.
        """
        parts, rec = self.parts, self.recorder
        lr = parts.lr.lr(step)
        for group in parts.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        x, y = parts.loader.batch(step)
        parts.model.seed_drops(self.spec.seed, step)
        # recorded steps run eagerly: hooks would make compiled code break its graph and recompile
        forward = parts.eager_forward if rec is not None and rec.recording else parts.forward
        with autocast(self.device):
            out = forward(x)
            loss = F.cross_entropy(out, y)
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if rec is not None:
            rec.step(step)
        parts.optimizer.step()
        self.sums.add(loss, out, y, step)
        return y.numel() * self.world.size

    # -- evaluation, checkpoints, the end ------------------------------------------------
    def _compile_status(self) -> dict:
        return {} if self.compile_s is None else {"compile_s": round(self.compile_s, 3)}

    def _evaluate(self, step: int, train_stats: dict | None, images_per_s: float) -> dict:
        row = metrics_row(step, self.parts, self.world, self.device, train_stats, images_per_s, self.time_s)
        if self.writer is not None:
            self.writer.log(row)
            self.writer.write()
        return row

    def _checkpoint(self) -> None:
        if self.recorder is not None:
            self.recorder.flush()  # the rows up to the checkpoint are on disk before it
        sums = self.sums.to_save(self.world)
        if self.world.main:
            save(self.run_dir, self.step, self.time_s, self.parts, sums, self.recorder, self.cuda,
                 self.last_checkpoint, self.recipe.keep_checkpoints)  # fmt: skip
        self.last_checkpoint = self.step

    def _diverged(self, bad_step: int) -> RunResult:
        """End the run as diverged: its loss was non-finite at ``bad_step`` (-1: the loss
        stayed finite, the recorder's statistics did not)."""
        if self.recorder is not None:
            self.recorder.stop()  # its last rows, and the first non-finite value among them
        where = self.recorder.nonfinite if self.recorder is not None else None
        message = diverged_message(bad_step, where)
        if bad_step < 0:
            bad_step = where["step"]
        self._finish(runs.DIVERGED, message, diverged_step=bad_step, nonfinite=where, **self._compile_status())
        return RunResult(self.run_dir, runs.DIVERGED, self.step, message)

    def _finish(self, state: str, message: str = "", **extra) -> None:
        """Stop the recorder (its last rows), then close the run directory as ``state``."""
        if self.recorder is not None:
            self.recorder.stop()
        if self.writer is not None:
            self.writer.close(state, self.step, message, **extra)


def run_writer(run_dir: Path, spec: RunSpec, callbacks: list[Callback]) -> RunWriter:
    """The run directory's writer for a trained run (rank 0's): it resumes what is there and
    writes when the loop says (at evaluations and checkpoints), not by the clock."""
    return RunWriter(run_dir, name=spec.name, resume=True, callbacks=callbacks, flush_seconds=None,
                     source=runs.TRAIN_SOURCE, total_steps=spec.recipe.steps)


def timed(train_step, step: int, device: torch.device) -> float:
    """Seconds of one training step, waiting for the device (torch.compile's first compiled
    step: the forward and backward graphs are compiled then)."""
    start = time.perf_counter()
    train_step(step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def train(spec: RunSpec, runs_dir: str | Path = "runs", progress: bool | None = None,
          callbacks: list[Callback] | None = None, dataset: datasets.Dataset | None = None,
          handoff: tuple[int, ...] = ()) -> RunResult:
    """Train one run (or resume it, or return it untouched if it already finished)."""
    return Trainer(spec, runs_dir, progress, callbacks, dataset, handoff).run()
