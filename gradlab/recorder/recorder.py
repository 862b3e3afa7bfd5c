"""The recorder: per-layer gradient and activation statistics while a model trains.

    rec = gradlab.watch(model, every=50)        # or: with gradlab.watch(model) as rec:
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True); loss.backward()
        rec.step()                              # after backward, before the next zero_grad
        opt.step()
    df = rec.frame()                            # step, layer, index, kind, stat, value
    rec.stop()

What is recorded (names in gradlab.stat_names, each declared in gradlab.recorder.statistics),
on the steps the schedule selects:

* per parameter tensor: grad_norm, weight_norm, grad_weight_ratio, update_norm
  (``||w_now - w_at_previous_recorded_step||``, NaN on the first record);
* per probe point output h (training mode with grad enabled only): act_mean, act_std
  (population std), act_grad_norm ``||dL/dh||`` (the vanishing-gradient curve along depth
  of He et al. 2015) and, at points next to a ReLU, act_zero_frac, the fraction it zeroes,
  and (when asked for: ``stats=[...]``) act_dead_frac, the fraction of its units that are
  never positive, dead ReLUs; act_sat_frac (asked for), at points a Sigmoid or Tanh follows
  (a module, or a zoo point's ``act_after``),
  the fraction of outputs in its flat tails;
* per residual block: branch_ratio ``||F(x)|| / ||x||``, the root mean square of the
  examples' norms.

Activation statistics are estimated on the first ``act_sample`` examples of a batch (or
exactly over the whole batch, at BatchNorms); gradients always use all of it. ``step()``
may come before or after ``opt.step()``, as long as it is always the same. ``rec.nonfinite``
names the first non-finite value. How the recorder stays cheap (hooks only on recorded
steps, statistics read from BatchNorm's own batch statistics, values kept on the device
until ``flush()``, reductions deferred on CUDA) and what it costs: docs/recorder.md.

Supported setups (mixed precision, channels_last, DDP, torch.compile, gradient
accumulation, GradScaler) and what is not supported: docs/recorder.md.
"""

from __future__ import annotations

import os
import weakref
from typing import Iterable

import pandas as pd
import torch.nn as nn

from gradlab import runs
from gradlab import stat_names as S
from gradlab.callbacks import StopRun
from gradlab.config import REDUCE_AT
from gradlab.errors import RecorderError
from gradlab.models.probe_points import ProbePoint
from gradlab.recorder import derive, unstopped
from gradlab.recorder.derive import FRAME_COLUMNS, HIST_COLUMNS
from gradlab.recorder.instrument import Instrument
from gradlab.recorder.misuse import StepChecks
from gradlab.recorder.schedule import Schedule
from gradlab.recorder.targets import description, unwrap
from gradlab.run_writer import RunWriter, metrics_row

__all__ = ["FRAME_COLUMNS", "HIST_COLUMNS", "Recorder", "end_state"]

STATE_VERSION = 1

# Modules being watched, so that a second watch raises instead of doubling every hook. Both
# sides are weak: a recorder dropped with its model is collected (and its run closed).
_WATCHED: "weakref.WeakKeyDictionary[nn.Module, weakref.ref]" = weakref.WeakKeyDictionary()


def _watcher(module: nn.Module) -> "Recorder | None":
    ref = _WATCHED.get(module)
    return None if ref is None else ref()


class Recorder:
    """Records gradient-flow statistics of ``model`` on the steps its schedule selects; the
    options are those of :func:`watch`, which makes and starts one."""

    def __init__(
        self,
        model: nn.Module,
        *,
        every: int = 50,
        stats: Iterable[str] | None = None,
        dense_until: int = 100,
        dense_every: int = 1,
        histograms: bool = False,
        schedule: Schedule | None = None,
        hist_every: int | None = None,
        buffer_steps: int = 64,
        cpu_threads: int | None = None,
        act_sample: int | None = 16,
        reduce_at: str = "auto",
        include: Iterable[str] | str | None = None,
        exclude: Iterable[str] | str | None = None,
        run_dir: str | os.PathLike | RunWriter | None = None,
        name: str | None = None,
        config: dict | None = None,
        resume: bool = False,
        overwrite: bool = False,
        callbacks: Iterable = (),
        combine_ranks: bool = False,
    ):
        if not isinstance(model, nn.Module):
            raise RecorderError(f"watch() needs an nn.Module, not {type(model).__name__}.")
        self.model = model
        self.schedule = schedule if schedule is not None else Schedule(every, dense_until, dense_every)
        self.stats = S.checked(stats)
        self.hist_every = int(hist_every) if hist_every is not None else 10 * self.schedule.every
        for value, what, least in ((self.hist_every, "hist_every", 1), (buffer_steps, "buffer_steps", 1),
                                   (cpu_threads, "cpu_threads", 1), (act_sample, "act_sample", 1)):  # fmt: skip
            if value is not None and value < least:
                none = " or None" if what in ("cpu_threads", "act_sample") else ""
                raise RecorderError(f"{what} must be >= {least}{none}, not {value}.")
        if reduce_at not in REDUCE_AT:
            raise RecorderError(f"reduce_at must be one of {', '.join(REDUCE_AT)}, not {reduce_at!r}.")
        self.act_sample = act_sample
        # how the instrument is built (by start())
        self._options = dict(stats_asked=stats is not None, include=include, exclude=exclude, act_sample=act_sample,
                             cpu_threads=cpu_threads, reduce_at=reduce_at, buffer_steps=int(buffer_steps),
                             histograms=bool(histograms), combine_ranks=bool(combine_ranks))  # fmt: skip
        self._owns_writer = not isinstance(run_dir, RunWriter)
        if not self._owns_writer:
            if name is not None or config is not None or resume or overwrite or tuple(callbacks):
                raise RecorderError("name, config, resume, overwrite and callbacks describe a run_dir folder; "
                                    "a RunWriter given as run_dir carries its own.")
            self._writer = run_dir
        else:
            self._writer = None if run_dir is None else RunWriter(
                run_dir, name=name, config=config, resume=resume, overwrite=overwrite, callbacks=callbacks)
        self._inst: Instrument | None = None  # the measuring parts (start())
        self._reductions = "hooks"
        self._started = self._stopped = False
        self._step = 0  # the number of the step whose forward runs next
        self._first_step = 0  # this session's first step (a resumed run directory holds earlier ones)
        # rows kept in memory when there is no run directory to write them to
        self._history: list[pd.DataFrame] = []
        self._hist_history: list[pd.DataFrame] = []
        self._frame_cache: pd.DataFrame | None = None
        self._logged: list[dict] = []
        self._checks = StepChecks()  # misuse named once (gradlab.recorder.misuse)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "Recorder":
        """Resolve the targets, allocate the buffers and attach hooks if step 0 is recorded."""
        if self._started:
            raise RecorderError("This Recorder is already started; a Recorder can be started once.")
        inner = unwrap(self.model)
        if _watcher(inner) is not None:
            raise RecorderError(
                f"{type(inner).__name__} is already watched by another Recorder; "
                "call .stop() on that one (or leave its `with` block) before watching it again."
            )
        inst = self._inst = Instrument(self.model, self.stats, **self._options)
        self._reductions = inst.reductions
        if self._writer is not None:
            if not inst.keeps_rows:
                raise RecorderError("combine_ranks=True: rank 0 writes the run directory; pass run_dir only there.")
            self._open_writer()
        _WATCHED[inner] = weakref.ref(self)
        self._started = True
        if self._writer is not None and self._owns_writer:
            unstopped.register(self)  # closed at exit (or when collected) if never stopped
        inst.arm(self.schedule(self._step))
        return self

    def _open_writer(self) -> None:
        from gradlab.environment import describe

        w = self._writer
        info = {"schedule": self.schedule.to_dict(), "stats": list(self.stats), "act_sample": self.act_sample,
                "reductions": self.reductions}  # fmt: skip
        self._step = self._first_step = w.open(description(w.name, self._inst.targets), info,
                                               describe(self._inst.device))  # fmt: skip
        if self._owns_writer:
            w.status(runs.RUNNING)
            w.started(resumed=w.resumed)

    def stop(self, error: BaseException | None = None) -> None:
        """Remove every hook and flush what is left; a run directory is marked as
        :func:`end_state` says. The frames stay readable."""
        self._stop(error)

    def _close_unstopped(self, how: str, error: BaseException | None) -> str | None:
        """stop() for gradlab.recorder.unstopped: ``how`` the run ended without it; the state written."""
        return self._stop(error, f"{how} without rec.stop()")

    def _stop(self, error: BaseException | None, note: str = "") -> str | None:
        if not self._started or self._stopped:
            return None
        unstopped.forget(self)
        state = None
        self._inst.arm(False)
        try:
            self.flush()
        except BaseException as e:  # a full disk at the last flush: the run failed there
            error = e
            raise
        finally:
            self._stopped = True
            if _watcher(self._inst.targets.inner) is self:
                del _WATCHED[self._inst.targets.inner]
            self._inst.close()
            if self._writer is not None and self._owns_writer:
                nonfinite = self.nonfinite
                state, message = end_state(error, nonfinite)
                message = f"{message} ({note})" if message and note else message or note
                self._writer.close(state, message=message, **({"nonfinite": nonfinite} if nonfinite else {}))
        return state

    def __enter__(self) -> "Recorder":
        if not self._started:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop(exc)

    def __del__(self):
        # A recorder dropped without stop() leaves no hooks behind, and its run is closed.
        try:
            if self._started and not self._stopped:
                if self._writer is not None and self._owns_writer:
                    unstopped.close(self, unstopped.COLLECTED)
                else:
                    self._inst.detach()
        except Exception:
            pass

    @property
    def run_dir(self):
        """The run directory written (a Path), or None."""
        return None if self._writer is None else self._writer.run_dir

    @property
    def run_name(self) -> str | None:
        """The run's label in reports (its run directory's ``name``), or None."""
        return None if self._writer is None else self._writer.name

    # ------------------------------------------------------------------ stepping

    @property
    def recording(self) -> bool:
        """True when the next forward is a recorded step (its hooks are attached).

        A training loop that compiles the model can run the eager module on these steps and
        the compiled one on all others, so that compiled code never meets a hook."""
        return self._inst is not None and self._inst.armed

    @property
    def reductions(self) -> str:
        """Where the activation and gradient reductions run: "hooks" (in each hook), "step"
        (deferred to step(), the default on CUDA) or "mixed" (tensors of up to 16k elements
        deferred, larger ones in the hooks: the default on a CPU)."""
        return self._reductions

    @property
    def current_step(self) -> int:
        """The number of the step whose forward runs next."""
        return self._step

    def set_step(self, step: int) -> None:
        """Set the number of the next step (e.g. when resuming) and arm the hooks for it."""
        self._require_running()
        self._step = int(step)
        self._checks.restart(self._step)
        self._inst.hooks.clear()
        self._inst.arm(self.schedule(self._step))

    def step(self, step: int | None = None) -> None:
        """Record the step that just ran (if scheduled), then advance to the next one.

        Call after ``loss.backward()`` and before the next ``zero_grad``. ``step`` is the
        number of the step that just ran (default: the recorder's own counter); the next
        forward is ``step + 1``, and the hooks are attached for it only if it is scheduled.
        """
        self._require_running()
        inst = self._inst
        s = self._step if step is None else int(step)
        self._checks.stepped(s, self.schedule(s), inst.targets.params)
        if inst.settle_order() and self._writer is not None:
            self._writer.describe(description(self._writer.name, inst.targets))
        full = self.schedule(s) and inst.record(s, outputs=inst.armed)
        if inst.hist_buffer is not None and s % self.hist_every == 0:
            full = inst.record_histograms(s) or full
        inst.hooks.clear()
        self._step = s + 1
        inst.arm(self.schedule(self._step))
        if full or self._writer is not None and self._writer.due():
            self.flush()

    def log(self, step: int, /, **scalars) -> None:
        """Scalars of one step or evaluation, under any names (``rec.log(step,
        train_loss=loss, test_err=err)``): :meth:`metrics`, and metrics.parquet of the run
        directory. Values are numbers or 0-dim tensors (a tensor costs a host sync)."""
        self._require_running()
        row = metrics_row(step, scalars)
        if self._writer is not None:
            self._writer.log(row)
        else:
            self._logged.append(row)

    def _require_running(self) -> None:
        if not self._started:
            raise RecorderError("The Recorder is not started; use gradlab.watch(model) or Recorder(model).start().")
        if self._stopped:
            raise RecorderError("The Recorder is stopped; start a new one with gradlab.watch(model).")

    # ------------------------------------------------------------------ reading

    def flush(self) -> pd.DataFrame:
        """Copy the device buffer to the host (the only host sync); return the new rows, which
        go to the run directory (or, without one, to the history that :meth:`frame` returns)."""
        if not self._started:
            return derive.empty_frame()
        new, hist = self._inst.drain()
        self._checks.flushed(new)
        if hist is not None:
            self._hist_history.append(hist)
        if self._writer is not None:
            self._writer.add_layers(new)
            if self._writer.write() and self._owns_writer:
                self._writer.status(runs.RUNNING)
        elif len(new):
            self._history.append(new)
            self._frame_cache = None
        return new

    def frame(self) -> pd.DataFrame:
        """Every row recorded so far in this session (flushes first): step(int64), layer(str),
        index(int32), kind(str), stat(str), value(float64). With a run directory the rows are
        read back from it."""
        self.flush()
        if self._writer is not None:
            rows = self._writer.rows(runs.LAYERS, self._first_step)
            return derive.typed(rows) if rows is not None else derive.empty_frame()
        if self._frame_cache is None:  # concatenated once, until the next flush
            history = self._history
            self._frame_cache = derive.empty_frame() if not history else (
                history[0] if len(history) == 1 else pd.concat(history, ignore_index=True))
            self._history = [self._frame_cache] if history else []
        return self._frame_cache.copy()

    def metrics(self) -> pd.DataFrame:
        """Every row given to :meth:`log` (this session's): step, then the scalars by name."""
        if self._writer is not None:
            self._writer.write()
            rows = self._writer.rows(runs.METRICS, self._first_step)
            return rows if rows is not None else pd.DataFrame(columns=["step"])
        return pd.DataFrame(self._logged, columns=None if self._logged else ["step"])

    def histograms(self) -> pd.DataFrame:
        """Gradient histograms (flushes first): step, layer, index, kind, bin, lower, upper
        (edges of |g|), count. Empty unless the recorder was made with histograms=True."""
        self.flush()
        if not self._hist_history:
            return derive.empty_hist_frame()
        return pd.concat(self._hist_history, ignore_index=True)

    @property
    def nonfinite(self) -> dict | None:
        """{"step", "layer", "what": "grad"|"activation"|"weight"} of the first non-finite
        value, as of the last flush; None if none was seen. Ordered by step, then weights
        before activations before gradients; among weights and activations the shallowest,
        among gradients the deepest (where backward produced it first)."""
        found = self._inst.nonfinite if self._inst is not None else None
        return None if found is None else dict(found)

    @property
    def probe_points(self) -> list[ProbePoint]:
        """The resolved probe points in depth order (write them into the run directory)."""
        self._require_started()
        return list(self._inst.targets.points)

    @property
    def param_names(self) -> list[str]:
        self._require_started()
        return [p.name for p in self._inst.targets.params]

    def _require_started(self) -> None:
        if self._inst is None:
            raise RecorderError("The Recorder is not started; use gradlab.watch(model) or Recorder(model).start().")

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """Step counter, previous weights (for update_norm) and the first non-finite value.

        Tensors and plain Python only (loadable with ``torch.load(weights_only=True)``).
        Rows are not part of the state: flush and persist them before checkpointing.
        """
        self._require_started()
        return {"version": STATE_VERSION, "step": int(self._step), **self._inst.state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (the recorder must be started on the same model)."""
        self._require_running()
        if state.get("version") != STATE_VERSION:
            raise RecorderError(f"Recorder state version {state.get('version')!r} is not {STATE_VERSION}.")
        self._inst.load_state(state)
        self.set_step(int(state["step"]))


def end_state(error: BaseException | None, nonfinite: dict | None) -> tuple[str, str]:
    """(state, message) of a watched run: failed by ``error`` (interrupted for a
    KeyboardInterrupt); else diverged when a weight or an activation went non-finite (a
    non-finite gradient alone is what a GradScaler's skipped steps look like, so it is
    noted, not judged); else done."""
    if isinstance(error, StopRun):  # a finding (or another callback) stopped it on purpose
        return runs.INTERRUPTED, str(error)
    if error is not None:
        state = runs.INTERRUPTED if isinstance(error, KeyboardInterrupt) else runs.FAILED
        return state, f"{type(error).__name__}: {error}"
    if nonfinite and nonfinite["what"] != "grad":
        return runs.DIVERGED, f"{runs.diverged_note(nonfinite)}: the run diverged"
    return runs.DONE, ""
