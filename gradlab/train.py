"""One run: a model trained on one dataset with one seed, into a run directory.

The trainer knows nothing of W&B, SLURM or plotting: those plug in as callbacks
(`gradlab.callbacks.Callback`). Between evaluations nothing leaves the device: the
running loss and error, the divergence flag and the recorder's buffers are tensors.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from gradlab import data as datasets
from gradlab import families
from gradlab import models, runs
from gradlab.callbacks import Callback, CallbackList
from gradlab.checkpoint import load_latest, rotate, save_checkpoint
from gradlab.config import RunSpec, validate_recipe
from gradlab.distributed import World
from gradlab.environment import describe, resolve_device
from gradlab.errors import DiskFullError, RunInterrupted
from gradlab.interrupt import StopNow, StopRequest, graceful_stop
from gradlab.data.loader import DeviceLoader
from gradlab.lr_schedule import StepLR
from gradlab.progress import progress_bar
from gradlab.run_record import check_existing, spec_record
from gradlab.folders import check_output_folder
from gradlab.memory import check_fits
from gradlab.run_lock import RunLock

log = logging.getLogger(__name__)


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


STOP_CHECK_EVERY = 10  # data-parallel runs: steps between agreements on a stop request


class Trainer:
    """Holds everything one run needs; `run()` trains to the end or to divergence."""

    def __init__(self, spec: RunSpec, runs_dir: str | Path = "runs", progress: bool | None = None,
                 callbacks: list[Callback] | None = None, dataset: datasets.Dataset | None = None,
                 handoff: tuple[int, ...] = ()):
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
        self.callbacks = CallbackList((callbacks or []) if self.world.main else [])
        self.device = self.world.device_for(resolve_device(spec.device))
        self.cuda = self.device.type == "cuda"
        # before anything is built: a run that cannot fit is refused, not left to exhaust the machine
        check_fits(spec, self.device, runs_at_once=1 if self.cuda else self.world.size)
        self._dataset = dataset
        self._pretrained = None  # fine-tuning: the state dict to start from (fetched in run())

    # -- setup ---------------------------------------------------------------------------
    def _setup(self) -> None:
        spec, recipe = self.spec, self.recipe
        torch.manual_seed(spec.seed)
        ds = self._dataset or datasets.load(spec.data)
        self.data = ds
        self.model = models.build(spec.model.name, num_classes=ds.num_classes, in_channels=ds.shape[0],
                                  **spec.model.build_options())
        self.model_info = models.describe(self.model, spec.model.name, input_size=ds.shape)
        if spec.model.weights:
            from gradlab import finetune

            self.model_info["finetune"] = finetune.prepare(self.model, spec.model, self._pretrained)
            self._pretrained = None
        self.batchnorm = None
        if self.world.enabled:  # the global batch's statistics, as in a single process
            from gradlab.sync_batchnorm import convert

            self.model, self.batchnorm = convert(self.model, self.device)
        self.model.to(self.device)
        if self.cuda:
            self.model.to(memory_format=torch.channels_last)
        if spec.data.name == "imagefolder":  # streamed from disk: too big to live on the device
            from gradlab.data.folders import FolderLoader

            self.loader = FolderLoader(ds, recipe.batch_size, spec.seed, self.device, channels_last=self.cuda,
                                       rank=self.world.rank, world_size=self.world.size)
            self.eval_sets = ds.eval_sets()
        else:
            self.loader = DeviceLoader(ds, recipe.batch_size, spec.seed, self.device, channels_last=self.cuda,
                                       rank=self.world.rank, world_size=self.world.size)
            self.eval_sets = {"test": (ds.test_x.to(self.device), ds.test_y.to(self.device))}
            if ds.val_y is not None:
                self.eval_sets["val"] = (ds.val_x.to(self.device), ds.val_y.to(self.device))
        self.optimizer = torch.optim.SGD(
            self.model.param_groups(),  # frozen (fine-tuning) parameters stay out; Fixup's scalars at lr/10
            lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
            nesterov=recipe.nesterov, **({"fused": True} if self.cuda else {"foreach": True}),
        )
        self.lr = StepLR(recipe, self.model_info["depth"], warmup=self.model_info["family"] in families.PAPER)
        parallel = self.world.wrap(self.model, self.device)  # DistributedDataParallel, or the model itself
        self.eager_forward = parallel
        self.forward = torch.compile(parallel, mode=spec.compile_mode) if spec.compile else parallel
        self.recorder = None
        if recipe.record:
            from gradlab.recorder import Schedule, default_schedule, watch

            schedule = Schedule(every=recipe.record_every) if recipe.record_every else default_schedule(recipe.steps)
            self.recorder = watch(self.model, **schedule.to_dict())
        self.env = describe(self.device)
        if self.world.enabled:
            self.env["distributed"] = self.world.describe(recipe.batch_size, self.batchnorm)
        z = torch.zeros((), device=self.device)
        self.acc = {"loss_sum": z.clone(), "err_sum": z.clone(), "count": z.clone(),
                    "bad_step": torch.full((), -1, dtype=torch.int64, device=self.device)}
        self.metrics_rows: list[dict] = []
        self.prior_layers: pd.DataFrame | None = None  # rows from before a resume
        self.layer_rows_sent = 0  # rows of the recorder's frame already given to callbacks
        self._synced_layers: pd.DataFrame | None = None  # data-parallel: rows with dL/dh combined over ranks
        self.step = 0
        self.last_checkpoint: int | None = None
        self.time_s = 0.0
        self.compile_s: float | None = None  # --compile: time of the first compiled step

    def _autocast(self):
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- resume --------------------------------------------------------------------------
    def _resume(self) -> None:
        state = load_latest(self.run_dir, self.device)  # every rank reads the same file
        self.world.check_same(-1 if state is None else int(state["step"]), "the step to resume from")
        if state is None:
            return
        threads = state.get("threads")
        if threads is not None and not self.cuda and threads != torch.get_num_threads() and self.world.main:
            log.warning("warning: %s was checkpointed at step %d with %d CPU thread(s) and resumes with %d: CPU "
                        "sums then round differently, so it will not match an uninterrupted run exactly; resume "
                        "with OMP_NUM_THREADS=%d for that", self.spec.name, int(state["step"]), threads,
                        torch.get_num_threads(), threads)  # fmt: skip
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr.load_state_dict(state["lr"])
        if self.world.main:  # the sums over all ranks (_running_sums); the others start from zero
            for k, v in state["acc"].items():
                self.acc[k].copy_(v)
        if self.recorder is not None and "recorder" in state:
            self.recorder.load_state_dict(state["recorder"])
        self.step = self.last_checkpoint = int(state["step"])
        self.time_s = float(state["time_s"])
        # Rows written after the checkpoint belong to steps that will be run again.
        if (self.run_dir / runs.METRICS).exists():
            m = runs.read_parquet(self.run_dir / runs.METRICS)
            self.metrics_rows = m[m["step"] <= self.step].to_dict("records")
        if (self.run_dir / runs.LAYERS).exists():
            lay = runs.read_parquet(self.run_dir / runs.LAYERS)
            self.prior_layers = lay[lay["step"] < self.step]

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> RunResult:
        if self.spec.model.weights and not any(self.run_dir.glob("checkpoint*.pt")):
            from gradlab import finetune

            self._pretrained = finetune.load_state(self.spec.model)  # before the run directory exists
        lock = RunLock(self.run_dir) if self.world.main else contextlib.nullcontext()
        with self.world.started(self.device), lock:
            if self.existing is not None:
                status = runs.read_json(self.run_dir / runs.STATUS) if (self.run_dir / runs.STATUS).exists() else {}
                if status.get("state") in runs.FINISHED_STATES:
                    return RunResult(self.run_dir, status["state"], int(status.get("step", 0)), "already finished")
            self._setup()
            with deterministic(self.spec.deterministic and not self.cuda), graceful_stop(self.handoff) as stop:
                return self._run(stop)

    def _run(self, stop: StopRequest) -> RunResult:
        record = spec_record(self.spec, self.model_info, self.data, self.env)
        if self.existing is None and self.world.main:
            runs.write_json(self.run_dir / runs.SPEC, record)
        self._resume()
        total = self.recipe.steps
        if self.world.main:
            runs.write_status(self.run_dir, runs.RUNNING, self.step, total)
        self.callbacks.on_start(self.run_dir, record, resumed=self.step > 0)
        bar = None
        try:
            if self.step == 0:
                self._evaluate(0, train_stats=None, images_per_s=float("nan"))
            bar = self._progress_bar(total)
            return self._loop(total, bar, stop)
        except BaseException as e:
            # SystemExit: a scheduler's signal handler ended the process (submitit exits this
            # way after requeueing a preempted or timed-out job, which then resumes the run)
            interrupted = isinstance(e, (KeyboardInterrupt, RunInterrupted, SystemExit))
            state = runs.INTERRUPTED if interrupted else runs.FAILED
            if isinstance(e, StopNow):
                message = (f"{self.spec.name} stopped at once by a second {e} during step "
                           f"{self.step + 1}, without a checkpoint; rerun the same command to resume from the last "
                           f"checkpoint (step {self.last_checkpoint or 0})")
            elif isinstance(e, RunInterrupted):
                message = str(e)
            elif isinstance(e, SystemExit):
                message = (f"the process was told to exit (code {e.code}) at step {self.step}, e.g. by a job "
                           f"scheduler; rerun or requeue it to resume from the last checkpoint")
            else:
                message = f"{type(e).__name__}: {e}"
            if self.world.main:
                try:
                    runs.write_status(self.run_dir, state, self.step, total, message)
                except DiskFullError:  # it stays "running", shown as crashed; a rerun resumes
                    pass
            self.callbacks.on_end(self.run_dir, state, message)
            if isinstance(e, StopNow):
                raise RunInterrupted(message, e.exit_code) from None
            raise
        finally:
            if bar is not None:
                bar.close()
            if self.recorder is not None:
                self.recorder.stop()
            close = getattr(self.loader, "close", None)  # a streaming loader's worker processes
            if close is not None:
                close()

    def _progress_bar(self, total: int):
        return progress_bar(total, self.spec.name, "step", self.progress, initial=self.step)

    def _loop(self, total: int, bar, stop: StopRequest) -> RunResult:
        recipe, acc = self.recipe, self.acc
        rec = self.recorder
        if rec is not None:
            rec.set_step(self.step)
        interval_start, interval_images = time.perf_counter(), 0
        while self.step < total:
            step = self.step
            if self.spec.compile and self.compile_s is None and not (rec is not None and rec.recording):
                self.compile_s = self._timed_step(step)  # compiles: kept out of images/s
                interval_start += self.compile_s
                batch = 0  # its time and its images both stay out of images/s
            else:
                batch = self.train_step(step)
            self.step = done = step + 1
            interval_images += batch
            if bar is not None:
                bar.update(1)
            if self.lr.warming and done % recipe.warmup_check_every == 0:
                sums = self.world.totals(acc)  # every rank takes the same decision
                self.lr.observe(done, sums["err_sum"] / max(sums["count"], 1))
            if done % recipe.eval_every == 0 or done == total:
                elapsed = time.perf_counter() - interval_start
                self.time_s += elapsed
                stats = self.world.totals(acc)  # summed over ranks: the global batch's
                for k in ("loss_sum", "err_sum", "count"):
                    acc[k].zero_()
                row = self._evaluate(done, stats, interval_images / max(elapsed, 1e-9))
                if bar is not None:
                    bar.set_postfix(loss=f"{row['train_loss']:.3f}", err=f"{row['train_err']:.1%}",
                                    test=f"{row['test_err']:.1%}", ips=f"{row['images_per_s']:.0f}")
                if stats["bad_step"] >= 0 or not math.isfinite(row["train_loss"]):
                    return self._diverged(int(stats["bad_step"]), total)
                interval_start, interval_images = time.perf_counter(), 0
            # every rank stops after the same step; data-parallel ranks agree every few steps only,
            # since each agreement is a round trip between the processes
            stopping = stop.requested if not self.world.enabled else (
                done % STOP_CHECK_EVERY == 0 and self.world.agree(stop.requested))
            if done % recipe.checkpoint_every == 0 or done == total:
                self._checkpoint()
                if self.world.main and done < total:
                    runs.write_status(self.run_dir, runs.RUNNING, done, total, **self._compile_status())
            elif stopping:
                self._checkpoint()
            if stopping and done < total:
                stop.hand_back()  # a job scheduler's signal: it requeues the job now (and exits)
                by = stop.name or "a signal to another process"
                raise RunInterrupted(f"{self.spec.name} stopped by {by} at step {done} after writing a "
                                     f"checkpoint; rerun the same command to resume", stop.exit_code)
        # also when the final checkpoint was there already (a process that died before
        # writing this): the rerun that resumes at the last step repairs the status
        if self.world.main:
            runs.write_status(self.run_dir, runs.DONE, self.step, total, **self._compile_status())
        self.callbacks.on_end(self.run_dir, runs.DONE, "")
        return RunResult(self.run_dir, runs.DONE, self.step)

    def _timed_step(self, step: int) -> float:
        """Seconds taken by one training step, waiting for the device (torch.compile's first
        compiled step: the forward and backward graphs are compiled then)."""
        start = time.perf_counter()
        self.train_step(step)
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def _compile_status(self) -> dict:
        return {} if self.compile_s is None else {"compile_s": round(self.compile_s, 3)}

    def train_step(self, step: int) -> int:
        """One optimisation step at global step `step`; returns the batch size.

        Nothing here waits for the device: statistics accumulate in device tensors.
        """
        acc = self.acc
        lr = self.lr.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        x, y = self.loader.batch(step)
        self.model.seed_drops(self.spec.seed, step)
        # Recorded steps run eagerly: the recorder's hooks would make compiled code break its
        # graph at every probe point and recompile whenever they come and go.
        recording = self.recorder is not None and self.recorder.recording
        forward = self.eager_forward if recording else self.forward
        with self._autocast():
            out = forward(x)
            loss = F.cross_entropy(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.recorder is not None:
            self.recorder.step(step)
        self.optimizer.step()
        with torch.no_grad():
            loss_d = loss.detach().float()
            acc["loss_sum"] += loss_d * y.numel()
            acc["err_sum"] += (out.argmax(1) != y).sum()
            acc["count"] += y.numel()
            bad = ~torch.isfinite(loss_d) & (acc["bad_step"] < 0)
            acc["bad_step"].copy_(torch.where(bad, step, acc["bad_step"]))
        return y.numel() * self.world.size  # the global batch

    # -- evaluation and files ------------------------------------------------------------
    @torch.no_grad()
    def _error(self, x_all: torch.Tensor, y_all: torch.Tensor) -> float:
        n = len(y_all)
        if self.world.enabled:  # each rank its contiguous part of the set; the counts are summed
            part = self.world.shard(n)
            x_all, y_all = x_all[part], y_all[part]
        self.model.eval()
        wrong = torch.zeros((), device=self.device)
        for xb, yb in self.loader.eval_batches(x_all, y_all):
            with self._autocast():
                wrong += (self.forward(xb).argmax(1) != yb).sum()
        self.model.train()
        return float(self.world.sum_(wrong)) / n

    def _evaluate(self, step: int, train_stats: dict | None, images_per_s: float) -> dict:
        count = train_stats["count"] if train_stats else 0
        row = {
            "step": step,
            "epoch": self.loader.epoch_of(step),
            "lr": self.lr.lr(max(step - 1, 0)),
            "train_loss": train_stats["loss_sum"] / count if count else float("nan"),
            "train_err": train_stats["err_sum"] / count if count else float("nan"),
            "test_err": self._error(*self.eval_sets["test"]),
            "val_err": self._error(*self.eval_sets["val"]) if "val" in self.eval_sets else float("nan"),
            "images_per_s": images_per_s,
            "time_s": self.time_s,
        }
        self.metrics_rows.append(row)
        if self.world.main:
            runs.write_parquet(self.run_dir / runs.METRICS,
                               pd.DataFrame(self.metrics_rows, columns=runs.METRIC_COLUMNS))
        self.callbacks.on_eval(self.run_dir, row)
        return row

    def _flush_layers(self) -> None:
        """Write everything recorded so far (the recorder may have flushed on its own)."""
        if self.recorder is None:
            return
        recorded = self.recorder.frame()
        new = recorded.iloc[self.layer_rows_sent:]
        self.layer_rows_sent = len(recorded)
        if self.world.enabled:  # dL/dh of the global batch (gradlab.distributed); the frame keeps them
            recorded = self._full_batch_act_grads(recorded, len(recorded) - len(new))
            new = recorded.iloc[len(recorded) - len(new):]
            if not self.world.main:
                return
        if len(new):
            self.callbacks.on_layers(self.run_dir, new)
        frames = [f for f in (self.prior_layers, recorded) if f is not None and len(f)]
        if frames:
            runs.write_parquet(self.run_dir / runs.LAYERS, pd.concat(frames, ignore_index=True))

    def _full_batch_act_grads(self, recorded: pd.DataFrame, start: int) -> pd.DataFrame:
        """``recorded`` with the act_grad_norm values of rows ``start:`` combined over ranks;
        the combined rows are kept for the next flush (the recorder only has this rank's)."""
        from gradlab import stat_names as S

        out = pd.concat([f for f in (self._synced_layers, recorded.iloc[start:]) if f is not None],
                        ignore_index=True)
        rows = out.index[start:][out["stat"].iloc[start:].to_numpy() == S.ACT_GRAD_NORM]
        out.loc[rows, "value"] = self.world.full_batch_grad_norms(out.loc[rows, "value"].to_numpy())
        self._synced_layers = out
        return out

    def _checkpoint(self) -> None:
        self._flush_layers()
        acc = self._running_sums()
        if not self.world.main:
            self.last_checkpoint = self.step
            return
        state = {
            "format_version": runs.FORMAT_VERSION,
            "step": self.step,
            "time_s": self.time_s,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr": self.lr.state_dict(),
            "acc": acc,
        }
        if not self.cuda:
            state["threads"] = torch.get_num_threads()  # CPU sums round by thread count (_resume)
        if self.recorder is not None:
            state["recorder"] = self.recorder.state_dict()
        rotate(self.run_dir, self.last_checkpoint, self.recipe.keep_checkpoints)
        save_checkpoint(self.run_dir / runs.CHECKPOINT, state)
        self.last_checkpoint = self.step

    def _running_sums(self) -> dict[str, torch.Tensor]:
        """The running train-loss/error sums to checkpoint. Data-parallel: the sums over all
        ranks (every rank calls this), which rank 0 saves and alone restores (_resume)."""
        if not self.world.enabled:
            return {k: v.detach().cpu() for k, v in self.acc.items()}
        totals = self.world.totals(self.acc)
        return {k: torch.tensor(totals[k], dtype=v.dtype) for k, v in self.acc.items()}

    def _diverged(self, bad_step: int, total: int) -> RunResult:
        self._flush_layers()
        where = self.recorder.nonfinite if self.recorder is not None else None
        message = f"loss became non-finite at step {bad_step}"
        if where:
            message += f"; first non-finite {where['what']} in {where['layer']} at step {where['step']}"
        if self.world.main:
            runs.write_status(self.run_dir, runs.DIVERGED, self.step, total, message, **self._compile_status(),
                              diverged_step=bad_step, nonfinite=where)
        self.callbacks.on_end(self.run_dir, runs.DIVERGED, message)
        return RunResult(self.run_dir, runs.DIVERGED, self.step, message)


def train(spec: RunSpec, runs_dir: str | Path = "runs", progress: bool | None = None,
          callbacks: list[Callback] | None = None, dataset: datasets.Dataset | None = None,
          handoff: tuple[int, ...] = ()) -> RunResult:
    """Train one run (or resume it, or return it untouched if it already finished)."""
    return Trainer(spec, runs_dir, progress, callbacks, dataset, handoff).run()
