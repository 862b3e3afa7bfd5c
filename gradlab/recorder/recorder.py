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
accumulation, GradScaler) and what is not supported: docs/recorder.md. This file holds
when and what is recorded (starting, stepping, stopping, checkpoint state); what becomes
of the rows (the run directory or memory, and reading them back) is
gradlab.recorder.session_rows.
"""

from __future__ import annotations

import os
import weakref
from typing import Iterable

import torch.nn as nn

from gradlab import stat_names as S
from gradlab.config import REDUCE_AT
from gradlab.errors import RecorderError
from gradlab.recorder import unstopped
from gradlab.recorder.derive import FRAME_COLUMNS, HIST_COLUMNS
from gradlab.recorder.instrument import Instrument
from gradlab.recorder.misuse import StepChecks
from gradlab.recorder.schedule import Schedule
from gradlab.recorder.session_rows import ReadBack, SessionRows, end_state
from gradlab.recorder.targets import unwrap
from gradlab.run_writer import RunWriter, metrics_row

__all__ = ["FRAME_COLUMNS", "HIST_COLUMNS", "Recorder", "end_state"]

STATE_VERSION = 1

# Modules being watched, so that a second watch raises instead of doubling every hook. Both
# sides are weak: a recorder dropped with its model is collected (and its run closed).
_WATCHED: "weakref.WeakKeyDictionary[nn.Module, weakref.ref]" = weakref.WeakKeyDictionary()


def _watcher(module: nn.Module) -> "Recorder | None":
    ref = _WATCHED.get(module)
    return None if ref is None else ref()


class Recorder(ReadBack):
    """Records gradient-flow statistics of ``model`` on the steps its schedule selects; the
    options are those of :func:`watch`, which makes and starts one. Its read side (flush,
    frame, metrics, histograms, nonfinite, run_dir, ...) is its base ReadBack."""

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
        experiment: str | None = None,
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
        # where the rows go and are read back from (gradlab.recorder.session_rows)
        self._rows = SessionRows(run_dir, name=name, config=config, resume=resume, overwrite=overwrite,
                                 callbacks=callbacks, experiment=experiment)  # fmt: skip
        self._inst: Instrument | None = None  # the measuring parts (start())
        self._reductions = "hooks"
        self._started = self._stopped = False
        self._step = 0  # the number of the step whose forward runs next
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
        if self._rows.writer is not None:
            if not inst.keeps_rows:
                raise RecorderError("combine_ranks=True: rank 0 writes the run directory; pass run_dir only there.")
            self._open_writer()
        _WATCHED[inner] = weakref.ref(self)
        self._started = True
        if self._rows.writer is not None and self._rows.owns_writer:
            unstopped.register(self)  # closed at exit (or when collected) if never stopped
        inst.arm(self.schedule(self._step))
        return self

    def _open_writer(self) -> None:
        info = {"schedule": self.schedule.to_dict(), "stats": list(self.stats), "act_sample": self.act_sample,
                "reductions": self.reductions}  # fmt: skip
        self._step = self._rows.open(self._inst.targets, info, self._inst.device)

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
            state = self._rows.close(error, self.nonfinite, note)
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
                if self._rows.writer is not None and self._rows.owns_writer:
                    unstopped.close(self, unstopped.COLLECTED)
                else:
                    self._inst.detach()
        except Exception:
            pass

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
        if inst.settle_order():
            self._rows.describe(inst.targets)
        full = self.schedule(s) and inst.record(s, outputs=inst.armed)
        if inst.hist_buffer is not None and s % self.hist_every == 0:
            full = inst.record_histograms(s) or full
        inst.hooks.clear()
        self._step = s + 1
        inst.arm(self.schedule(self._step))
        if full or self._rows.due():
            self.flush()

    def log(self, step: int, /, **scalars) -> None:
        """Scalars of one step or evaluation, under any names (``rec.log(step,
        train_loss=loss, test_err=err)``): :meth:`metrics`, and metrics.parquet of the run
        directory. Values are numbers or 0-dim tensors (a tensor costs a host sync)."""
        self._require_running()
        self._rows.log(metrics_row(step, scalars))

    def _require_running(self) -> None:
        if not self._started:
            raise RecorderError("The Recorder is not started; use gradlab.watch(model) or Recorder(model).start().")
        if self._stopped:
            raise RecorderError("The Recorder is stopped; start a new one with gradlab.watch(model).")

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

