"""The recorder: per-layer gradient and activation statistics while a model trains.

    rec = gradlab.watch(model, every=50)        # or: with gradlab.watch(model) as rec:
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True); loss.backward()
        rec.step()                              # after backward, before the next zero_grad
        opt.step()
    df = rec.frame()                            # step, layer, index, kind, stat, value
    rec.stop()

What is recorded (names in gradlab.stat_names), on the steps the schedule selects:

* per parameter tensor: grad_norm, weight_norm, grad_weight_ratio, update_norm
  (``||w_now - w_at_previous_recorded_step||``, NaN on the first record). One
  ``torch._foreach_norm`` over all gradients, one over all weights; no parameter hooks.
* per probe point output h (forward hooks; training mode with grad enabled only):
  act_mean, act_std (population std), act_grad_norm (``||dL/dh||`` from ``h.register_hook``
  inside the forward hook, so in-place ReLUs after the point are fine, or, for a point
  that feeds a BatchNorm, from a hook on the BatchNorm's backward node), and act_zero_frac,
  the fraction a ReLU zeroes: at points with ``relu_after`` the fraction <= 0, at points
  with ``relu_output`` (a block's output after its final ReLU) the fraction == 0; both are
  one minus the fraction > 0 (a ReLU's output is never negative). Other
  points (a conv's output, a BN's before the addition, the logits) have no ReLU to speak
  of and get no act_zero_frac; counting their (absent) exact zeros cost a quarter of the
  forward hooks' time.
* per residual block: branch_ratio ``||F(x)|| / ||x||`` (forward pre-hook on the block for x,
  the block's branch point for F(x)), both per example: the root mean square of the
  examples' norms, over the sample for x and over the whole batch when F(x) is a
  BatchNorm's output (gradlab.probes.bn_stats).

``step()`` may come before or after ``opt.step()``, as long as it is always the same:
weight_norm and update_norm then describe the weights before (or after) that update.
act_std is derived from the sum and the norm (``sqrt(E[h^2] - E[h]^2)``), which loses
relative precision only when |mean| >> std (about 1e-7 * mean^2 / var). Norms of float32
tensors are PyTorch's, accumulated in float32 without rescaling: a vanished gradient whose
elements are below ~1e-19 (their squares below float32's normal range) loses precision,
and one below ~1e-23 reads 0 (a degraded plain-110 on digits reached ~1e-21 at its first
layers; see gradlab.probes.bn_grads for the BatchNorm-derived norms there).

How it stays cheap:

* Hooks are attached only for the forward of a scheduled step (the decision for the next
  step is taken in ``step()``); unscheduled steps run with no hooks at all.
* Activation statistics are estimated on the first ``act_sample`` (16) examples of a
  batch; gradients use all of it.
* A point whose output goes only to a BatchNorm (``ProbePoint.bn_next``: a conv and its BN,
  in every zoo model and in ``nn.Sequential`` defaults) has no hook of its own. The
  BatchNorm's forward hook takes its act_mean and act_std from the batch statistics the
  BatchNorm saved for backward, exact over the whole batch (gradlab.probes.bn_stats), and
  one hook on the BatchNorm's backward node gives both ||dL/dx|| and ||dL/dy|| (in the
  hooks, from a single pass over dL/dy and the BatchNorm's weight and bias gradients:
  gradlab.probes.bn_grads). Half the
  hooks and sample copies of a ResNet go away this way. The BatchNorm's own output gets its
  act_mean and act_std the same way, from gamma, beta and those statistics (exact over the
  whole batch too; its zero count, if any, is still taken on the sample). Where there are
  no saved batch statistics to read (a BatchNorm in eval mode, SyncBatchNorm, compiled
  regions) the point is measured on its sample as any other. On the first recorded step the
  point keeps a hook that checks that the BatchNorm's input is its output; if the forward
  routes it elsewhere first, the pair is dissolved for good and the point measures itself.
* Every statistic is a handful of device reductions (a sum, a norm, a two-pass count of
  positives into a reused scratch buffer) written as 0-dim tensors into a list that
  ``step()`` stacks into one row of a preallocated [slots, values] device buffer; derived
  values (mean, std, fractions, ratios) are computed on the host at flush time. ``flush()``
  is the only host sync; it runs by itself when the buffer is full. Outputs that are the
  same tensor (a BN output and the ``branch_out`` point after it, a block output and the
  next block's input) are reduced once.
* On CUDA the reductions are deferred (``reduce_at="step"``, gradlab.probes.deferred):
  a GPU step of a small network is bound by kernel launches, so the hooks only copy the
  activation sample (a slice and a copy) and keep dL/dh, and ``step()`` reduces all points
  of one shape together and every dL/dh with one ``torch._foreach_norm``: a recorded
  ResNet-56 training step (batch 128) dispatches 1,663 ATen ops against 1,477 bare, where
  the in-hook reductions dispatch 2,305 (``gradlab bench overhead`` counts them). On a CPU
  the hooks reduce on the spot, while the data is in cache (``reduce_at="hooks"``, the
  CPU default; deferring cost 1.17x bare there against the hooks' 1.08x). Both record the
  same values (tested).
* On an oversubscribed CPU, ``cpu_threads=1`` runs the hooks' reductions single-threaded.
* Non-finite values are detected from the recorded reductions themselves (a norm or a sum
  is non-finite iff an element is, or it overflowed float32), so they cost no extra pass.
  ``rec.nonfinite`` reports the first one, as of the last flush, ordered by step, then
  weights before activations before gradients; among weights and activations the
  shallowest, among gradients the deepest (where backward produced it first).

Measured cost (``gradlab bench overhead``): README.md ("Performance") and reports/recorder-overhead.md.

Supported setups:

* float32/float64 training, and bf16/fp16 autocast (statistics are accumulated in float32).
* channels_last inputs and activations.
* DistributedDataParallel (any backend): parameter statistics are those of the averaged
  gradients, identical on every rank; activation statistics are the local batch's. Watch the
  DDP-wrapped model (or its ``.module``); names have no ``module.`` prefix.
* ``torch.compile`` (tested with the aot_eager and inductor backends on CPU): watch the
  compiled module or the original; names have no ``_orig_mod.`` prefix. The hooks are
  excluded from compilation (``torch.compiler.disable``), so on recorded steps the graph
  breaks at each probe point and the statistics are computed eagerly; they equal eager
  mode's within float tolerance. Unrecorded steps run without hooks. ``fullgraph=True``
  cannot be combined with recording (the hooks are graph breaks). If compiled code skips
  the hooks altogether the recorder warns once and records parameter statistics only.
* Gradient accumulation: the activation statistics are those of the last micro-batch
  before ``step()``; gradient statistics are those of the accumulated gradients.
* fp16 with ``torch.amp.GradScaler``: call ``scaler.unscale_(opt)`` before ``rec.step()``
  so that grad_norm is unscaled; act_grad_norm is always that of the scaled loss.

Watch the model after moving it to its device. Not supported: models spread over several
devices, nn.DataParallel on several GPUs (use DDP), FSDP/DTensor parameters, modules called
several times per forward (the last call wins), sparse gradients (skipped), forward passes
in other threads.
"""

from __future__ import annotations

import math
import warnings
import weakref
from functools import partial
from typing import Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from gradlab import stat_names as S
from gradlab.config import REDUCE_AT
from gradlab.errors import RecorderError
from gradlab.models.probe_points import ProbePoint
from gradlab.probes import histograms as H
from gradlab.probes.bn_grads import BNGrads
from gradlab.probes.bn_stats import BNStats, bn_node, is_batchnorm, saved_stats
from gradlab.probes.deferred import COUNT, NORM, SUM, Deferred
from gradlab.probes.reductions import COUNT_UNIT, F32, count, flat, foreach_norm, norm, total
from gradlab.probes.schedule import Schedule
from gradlab.probes.targets import Targets, resolve, unwrap

__all__ = ["FRAME_COLUMNS", "HIST_COLUMNS", "Recorder", "watch"]

FRAME_COLUMNS = ["step", "layer", "index", "kind", "stat", "value"]
HIST_COLUMNS = ["step", "layer", "index", "kind", "bin", "lower", "upper", "count"]
STATE_VERSION = 1

# Modules being watched, so that a second watch raises instead of doubling every hook.
_WATCHED: "weakref.WeakKeyDictionary[nn.Module, Recorder]" = weakref.WeakKeyDictionary()


def _eager(fn):
    """Run a hook eagerly under torch.compile: Dynamo would otherwise try to compile the
    hook's own frame and recompile it for every new output tensor (identity guards). The
    wrapper costs well under a microsecond per call in eager mode."""
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    return disable(fn) if disable is not None else fn


class _Point:
    """Per probe point: which raw columns of the value row it fills."""

    __slots__ = ("j", "bn_out", "c_sum", "c_norm", "c_cnt", "c_grad", "fed", "feeder", "checked")

    def __init__(self, j: int, bn_out: bool = False):
        self.j = j
        self.bn_out = bn_out  # a BatchNorm: its output's sum and norm come from its batch statistics
        self.c_sum = self.c_norm = self.c_cnt = self.c_grad = -1
        self.fed = False  # its output goes only to the next point, a BatchNorm, whose hooks measure it
        self.feeder: _Point | None = None  # (on that BatchNorm's point) the point it measures
        self.checked = False  # a recorded step saw the BatchNorm's input be this point's output

    @property
    def active(self) -> bool:
        return max(self.c_sum, self.c_norm, self.c_cnt, self.c_grad) >= 0

    @property
    def hooked(self) -> bool:
        """Whether this point's module gets a measuring forward hook (for itself or its feeder)."""
        return not self.fed and (self.active or (self.feeder is not None and self.feeder.active))


class _Seen:
    """Reductions of one output tensor during one forward, shared by the points that see it."""

    __slots__ = ("ref", "version", "sum", "norm", "pos", "grad_cols", "k", "derived", "saved")

    def __init__(self, h: torch.Tensor):
        self.ref = weakref.ref(h)
        self.version = h._version
        self.sum = self.norm = self.pos = None
        self.k: int | None = None  # deferred reductions: its sample's number
        self.grad_cols: list[int] | None = None
        self.derived = None  # a BatchNorm output: its key in BNStats, whose sum and norm it gets
        self.saved = None  # a BatchNorm output: the statistics its backward node saved (False: none)


class Recorder:
    """Records gradient-flow statistics of ``model`` on the steps ``schedule`` selects.

    Arguments: ``every``, ``dense_until``, ``dense_every`` build the :class:`Schedule` (or pass
    ``schedule=``); ``stats`` is a subset of ``gradlab.stat_names.DEFAULT_STATS`` (None: all);
    ``histograms`` adds per-parameter gradient histograms every ``hist_every`` steps (default
    ``10 * every``), read with :meth:`histograms`; ``buffer_steps`` is how many recorded steps
    the device buffer holds before an automatic flush. ``act_sample``: activation statistics
    (act_mean, act_std, act_zero_frac) and branch ratios are computed on the first
    ``act_sample`` examples of the batch (exact when the batch is no larger; None: always the
    whole batch), except the mean and std of a BatchNorm in training and of the point that
    feeds it, which come from its statistics of the whole batch; gradient statistics always use
    the whole batch. On a CPU the activation reductions are memory-bound, and 16 of 128
    examples (over ten thousand values per layer) cut the forward-hook cost about eightfold
    while estimating the same quantities. Measured with `gradlab bench overhead` (ResNet-56,
    batch 128, 2-core CPU, every step recorded): 1.25x bare with the whole batch, 1.065x with
    32 examples, 1.055x with 16. ``cpu_threads`` limits the intra-op threads of the hooks'
    reductions on CPU tensors (None, the default: PyTorch's setting). On an oversubscribed
    machine ``cpu_threads=1`` avoids multi-threaded small ops stalling on a descheduled thread
    (ResNet-56, batch 128, 2-core CPU at load average ~6: 1.03x bare instead of 1.31x), but on
    an idle machine switching the thread count around every hook costs more than it saves
    (act_mean alone: +79 ms a step instead of +37 ms). ``reduce_at``: "hooks" reduces in each
    hook, "step" defers the reductions to ``step()`` (fewer, batched kernels), "auto" (default)
    picks "step" on CUDA (with ``act_sample`` set) and "hooks" elsewhere; the ``reductions``
    property says which is in use.
    """

    def __init__(
        self,
        model: nn.Module,
        every: int = 50,
        stats: Iterable[str] | None = None,
        dense_until: int = 100,
        dense_every: int = 1,
        histograms: bool = False,
        *,
        schedule: Schedule | None = None,
        hist_every: int | None = None,
        buffer_steps: int = 64,
        cpu_threads: int | None = None,
        act_sample: int | None = 16,
        reduce_at: str = "auto",
    ):
        if not isinstance(model, nn.Module):
            raise RecorderError(f"watch() needs an nn.Module, not {type(model).__name__}.")
        self.model = model
        self.schedule = schedule if schedule is not None else Schedule(every, dense_until, dense_every)
        self.stats = S.checked(stats)
        self._stats_asked = stats is not None
        self.histograms_enabled = bool(histograms)
        self.hist_every = int(hist_every) if hist_every is not None else 10 * self.schedule.every
        if self.hist_every < 1:
            raise RecorderError(f"hist_every must be >= 1, not {hist_every}.")
        if buffer_steps < 1:
            raise RecorderError(f"buffer_steps must be >= 1, not {buffer_steps}.")
        self.buffer_steps = int(buffer_steps)
        if cpu_threads is not None and cpu_threads < 1:
            raise RecorderError(f"cpu_threads must be >= 1 or None, not {cpu_threads}.")
        self.cpu_threads = cpu_threads
        if act_sample is not None and act_sample < 1:
            raise RecorderError(f"act_sample must be >= 1 or None, not {act_sample}.")
        self.act_sample = act_sample
        if reduce_at not in REDUCE_AT:
            raise RecorderError(f"reduce_at must be one of {', '.join(REDUCE_AT)}, not {reduce_at!r}.")
        self.reduce_at = reduce_at
        self._deferred: Deferred | None = None

        self._started = False
        self._stopped = False
        self._targets: Targets | None = None
        self._step = 0
        self._armed = False
        self._handles: list = []
        self._history: list[pd.DataFrame] = []
        self._hist_history: list[pd.DataFrame] = []
        self._frame_cache: pd.DataFrame | None = None
        self._nonfinite: dict | None = None
        self._prev: list[torch.Tensor] | None = None
        self._seen: dict[int, _Seen] = {}
        self._fed_out: dict[int, torch.Tensor] = {}  # unchecked fed points' outputs, this forward
        self._rearm = False  # a pairing changed: re-attach the hooks before the next recorded step
        self._scratch: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "Recorder":
        """Resolve the targets, allocate the buffers and attach hooks if step 0 is recorded."""
        if self._started:
            raise RecorderError("This Recorder is already started; a Recorder can be started once.")
        inner = unwrap(self.model)
        other = _WATCHED.get(inner)
        if other is not None:
            raise RecorderError(
                f"{type(inner).__name__} is already watched by another Recorder; "
                "call .stop() on that one (or leave its `with` block) before watching it again."
            )
        self._targets = t = resolve(self.model)
        self._layout(t)
        _WATCHED[inner] = self
        self._started = True
        self._set_armed(self.schedule(self._step))
        return self

    def stop(self) -> None:
        """Remove every hook and flush what is left. The frames stay readable."""
        if not self._started or self._stopped:
            return
        self._set_armed(False)
        try:
            self.flush()
        finally:
            self._stopped = True
            inner = self._targets.inner
            if _WATCHED.get(inner) is self:
                del _WATCHED[inner]
            self._prev = None
            self._scratch.clear()
            self._seen.clear()
            self._bn_stats.clear()
            self._bn_grads.clear()
            self._fed_out.clear()
            if self._deferred is not None:
                self._deferred.clear()  # copies and gradients of a step that was never recorded

    def __enter__(self) -> "Recorder":
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):
        # A recorder dropped without stop() must not leave hooks behind.
        try:
            if self._started and not self._stopped:
                self._remove_hooks()
        except Exception:
            pass

    # ------------------------------------------------------------------ layout

    def _layout(self, t: Targets) -> None:
        """Assign columns of the value row; build the host-side derivation tables."""
        want = set(self.stats)
        ncol = 0

        def col() -> int:
            nonlocal ncol
            ncol += 1
            return ncol - 1

        P = len(t.params)
        need_g = bool(want & {S.GRAD_NORM, S.GRAD_WEIGHT_RATIO})
        need_w = bool(want & {S.WEIGHT_NORM, S.GRAD_WEIGHT_RATIO})
        need_u = S.UPDATE_NORM in want
        self._pc_grad = [col() for _ in range(P)] if need_g else []
        self._pc_weight = [col() for _ in range(P)] if need_w else []
        self._pc_update = [col() for _ in range(P)] if need_u else []

        self._points = [_Point(j, is_batchnorm(m)) for j, m in enumerate(t.modules)]
        branch_points = {b.branch for b in t.blocks} if S.BRANCH_RATIO in want else set()
        for pt in self._points:
            if S.ACT_MEAN in want or S.ACT_STD in want:
                pt.c_sum = col()
            if S.ACT_STD in want or pt.j in branch_points:
                pt.c_norm = col()
            if S.ACT_ZERO_FRAC in want and t.points[pt.j].next_to_relu:
                pt.c_cnt = col()
            if S.ACT_GRAD_NORM in want:
                pt.c_grad = col()
        self._bc_x = [col() for _ in t.blocks] if S.BRANCH_RATIO in want else []
        self._ncol = ncol
        for j in range(len(t.points) - 1):
            # (a zero count cannot come from the BatchNorm: such a point measures itself)
            if t.points[j].bn_next and is_batchnorm(t.modules[j + 1]) and self._points[j].c_cnt < 0:
                self._points[j].fed = True
                self._points[j + 1].feeder = self._points[j]
        if self._stats_asked and S.ACT_ZERO_FRAC in want and self._points and all(p.c_cnt < 0 for p in self._points):
            warnings.warn(
                "gradlab: act_zero_frac was asked for, but no probe point is next to a ReLU (an "
                "nn.ReLU module right after it in an nn.Sequential, or a zoo block's final ReLU), "
                "so it will not be recorded. A ReLU applied as F.relu in forward is invisible to "
                "the default probe points: use nn.ReLU modules, or give the model probe_points().",
                RuntimeWarning,
                stacklevel=3,
            )
        out_cols = [c for p in self._points for c in (p.c_sum, p.c_norm, p.c_cnt) if c >= 0]
        self._out_cols = np.asarray(out_cols, dtype=np.int64)
        self._warned_no_outputs = False

        dev = next((p.param.device for p in t.params), None)
        if dev is None:
            dev = next((b.device for b in t.inner.buffers()), torch.device("cpu"))
        self._device = dev
        self._weights = [p.param for p in t.params]  # read under no_grad: no detach needed
        # auto defers on CUDA only with a sample: copying whole activations would double their memory
        defer = self.reduce_at == "step" or (self.reduce_at == "auto" and dev.type == "cuda" and bool(self.act_sample))
        self._deferred = Deferred(dev) if defer else None
        self._bn_stats = BNStats(dev, {pt.j: t.modules[pt.j] for pt in self._points if pt.bn_out})
        self._bn_grads = BNGrads(dev, self._bn_stats.where)
        self._unset = torch.full((), math.nan, dtype=F32, device=dev)  # "not measured"
        self._nan = torch.full((), math.nan, dtype=F32, device=dev)  # "measured: NaN"
        self._template = [self._unset] * ncol
        self._vals = list(self._template)
        self._numel_row = [0] * len(t.points)
        cap = self.buffer_steps
        self._buf = torch.empty((cap, max(ncol, 1)), dtype=F32, device=dev)
        self._slot_steps = np.zeros(cap, dtype=np.int64)
        self._slot_written = np.zeros((cap, ncol), dtype=bool)
        self._slot_numel = np.zeros((cap, len(t.points)), dtype=np.float64)
        self._slot = 0
        if self.histograms_enabled:
            self._hbuf = torch.zeros((cap, P, H.N_BINS), dtype=F32, device=dev)
            self._hslot_steps = np.zeros(cap, dtype=np.int64)
            self._hslot = 0

        # host-side tables: one key (layer, index, kind) per row family
        self._pkeys = [(p.name, p.index, p.kind) for p in t.params]
        self._okeys = [(p.name, p.index, p.kind) for p in t.points]
        self._bkeys = [(b.name, b.index, "block") for b in t.blocks]

    # ------------------------------------------------------------------ hooks

    def _set_armed(self, armed: bool) -> None:
        if self._rearm and self._armed:
            self._remove_hooks()
            self._armed = False
        self._rearm = False
        if armed == self._armed:
            return
        if armed:
            t = self._targets
            for pt, module in zip(self._points, t.modules):
                if pt.hooked:
                    self._handles.append(module.register_forward_hook(partial(self._on_output, pt)))
                elif pt.fed and pt.active and not pt.checked:
                    self._handles.append(module.register_forward_hook(partial(self._note_fed, pt)))
            for b, block in enumerate(t.blocks if self._bc_x else ()):
                self._handles.append(block.module.register_forward_pre_hook(partial(self._on_block_input, b)))
        else:
            self._remove_hooks()
        self._armed = armed

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _scratch_for(self, h: torch.Tensor) -> torch.Tensor:
        """A reused 1-D buffer of h's numel, dtype and device (views kept: no op per call)."""
        n = h.numel()
        view = self._scratch.get((h.dtype, h.device, n))
        if view is None:
            key = (h.dtype, h.device)
            buf = self._scratch.get(key)
            if buf is None or buf.numel() < n:
                self._scratch = {k: v for k, v in self._scratch.items() if k[:2] != key}  # views of the old one
                buf = self._scratch[key] = torch.empty(n, dtype=h.dtype, device=h.device)
            view = self._scratch[(h.dtype, h.device, n)] = buf[:n]
        return view

    def _seen_entry(self, h: torch.Tensor) -> _Seen:
        e = self._seen.get(id(h))
        if e is None or e.ref() is not h or e.version != h._version:
            e = _Seen(h)
            self._seen[id(h)] = e
        return e

    def _count(self, h: torch.Tensor) -> torch.Tensor:
        """reductions.count over all of h, its elementwise pass into a reused scratch buffer."""
        f = flat(h)
        if f is None:
            return count(h)
        return count(f, out=self._scratch_for(f))

    def _limit_threads(self, t: torch.Tensor) -> int:
        """Before reducing CPU tensor ``t``: drop to ``cpu_threads`` intra-op threads and
        return the count to restore (0: nothing changed)."""
        limit = self.cpu_threads
        if limit and t.device.type == "cpu":
            n = torch.get_num_threads()
            if n > limit:
                torch.set_num_threads(limit)
                return n
        return 0

    def _with_threads_for(self, t: torch.Tensor, fn, *args):
        """``fn(*args)`` with the intra-op threads limited for reducing ``t`` (see
        _limit_threads; the hot hooks inline this)."""
        restore = self._limit_threads(t)
        try:
            return fn(*args)
        finally:
            if restore:
                torch.set_num_threads(restore)

    @staticmethod
    def _output_tensor(output) -> torch.Tensor | None:
        h = output
        if not isinstance(h, torch.Tensor):
            h = next((o for o in h if isinstance(o, torch.Tensor)), None) if isinstance(h, (tuple, list)) else None
        return h if h is not None and h.is_floating_point() and not h.is_sparse else None

    @_eager
    def _on_output(self, pt: _Point, module: nn.Module, args, output) -> None:
        if not torch.is_grad_enabled():
            return
        feeder = pt.feeder
        if feeder is not None and not feeder.checked:
            feeder = self._check_pair(pt, args)
        own = pt.active and module.training
        fed = feeder is not None and feeder.active and args and self._targets.modules[feeder.j].training
        if not (own or fed):
            return
        h = self._output_tensor(output)
        if h is None:
            return
        restore = self._limit_threads(h)
        try:
            e = self._seen_entry(h)
            if fed:
                self._measure_fed(feeder, args[0], h, e)
            if own:
                if pt.bn_out and (pt.c_sum >= 0 or pt.c_norm >= 0):
                    self._derive_output(pt, h, e)
                self._measure(pt, h, e)
        finally:
            if restore:
                torch.set_num_threads(restore)

    @_eager
    def _note_fed(self, pt: _Point, module: nn.Module, args, output) -> None:
        """An unchecked fed point's output, for its BatchNorm's hook to compare with its input."""
        if pt.checked:  # a later micro-batch of the step that checked it
            return
        h = self._output_tensor(output) if module.training and torch.is_grad_enabled() else None
        if h is not None:
            self._fed_out[pt.j] = h

    def _check_pair(self, q: _Point, args) -> _Point | None:
        """The first time a BatchNorm's hook runs after its fed point's: is its input that
        point's output? Yes: the pair holds (the point's checking hook goes). No (the model
        routes the output elsewhere first): unpair for good and measure the point on its own
        output now, as on every later step. Returns the feeder to measure, if any."""
        p = q.feeder
        h = self._fed_out.pop(p.j, None)
        if h is None:
            return None  # the point did not run (in training) before this BatchNorm: no verdict
        self._rearm = True
        if args and args[0] is h:
            p.checked = True
            return p
        self._unpair(p)
        self._with_threads_for(h, self._measure, p, h)
        return None

    def _unpair(self, p: _Point) -> None:
        p.fed = False
        self._points[p.j + 1].feeder = None
        self._rearm = True

    def _measure(self, pt: _Point, h: torch.Tensor, e: _Seen | None = None) -> None:
        e = e or self._seen_entry(h)
        self._reduce_output(pt, e, h)
        if pt.c_grad >= 0 and h.requires_grad:
            self._want_grad(pt, e, h)

    def _derive_output(self, pt: _Point, y: torch.Tensor, e: _Seen) -> None:
        """BatchNorm output y's sum and norm from its batch statistics (gradlab.probes.bn_stats),
        for every point that sees y; its other statistics are reduced on its sample."""
        if e.derived is None and e.sum is None and e.norm is None and e.k is None:
            n = self._sample_size(y)
            if self._bn_stats.add_output(pt.j, y, n / y.shape[0] if n else 1.0, self._saved_of(y, e)):
                e.derived = pt.j

    def _saved_of(self, y: torch.Tensor, e: _Seen):
        """The batch statistics BatchNorm output y's backward node saved (read once per y)."""
        if e.saved is None:
            e.saved = (saved_stats(y, y.shape[1]) if y.dim() >= 2 else None) or False
        return e.saved or None

    def _reduce_output(self, pt: _Point, e: _Seen, h: torch.Tensor) -> None:
        if e.derived is not None:
            self._bn_stats.share(e.derived, pt.c_sum, pt.c_norm)
        if self._deferred is not None:
            self._defer(pt, e, h)
        elif pt.c_cnt >= 0 or e.derived is None:
            self._reduce_now(pt, e, self._sample(h.detach()))  # reductions must not extend the autograd graph
        self._numel_row[pt.j] = self._sample_numel(h)

    def _want_grad(self, pt: _Point, e: _Seen, h: torch.Tensor) -> None:
        """Column pt.c_grad gets ||dL/dh||, from h's gradient hook (one per tensor)."""
        if e.grad_cols is None:
            e.grad_cols = [pt.c_grad]
            h.register_hook(partial(self._on_grad, e.grad_cols))
        elif pt.c_grad not in e.grad_cols:
            e.grad_cols.append(pt.c_grad)

    def _measure_fed(self, p: _Point, x, y: torch.Tensor, ey: _Seen) -> None:
        """Point p's output x went only into this BatchNorm, whose output is y
        (``ProbePoint.bn_next``): x's sum and norm come from the batch statistics the
        BatchNorm saved (gradlab.probes.bn_stats), dL/dx from the BatchNorm's backward node,
        which also serves dL/dy. Whatever cannot be had that way is measured on x itself."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.is_sparse:
            return
        e = self._seen_entry(x)
        if p.c_sum >= 0 or p.c_norm >= 0:
            sums = [p.c_sum] if p.c_sum >= 0 else []
            norms = [p.c_norm] if p.c_norm >= 0 else []
            fresh = e.sum is None and e.norm is None and e.k is None
            if fresh and x.dim() >= 2 and self._bn_stats.add(x, self._saved_of(y, ey), sums, norms):
                self._numel_row[p.j] = x.numel()
            else:
                self._bn_stats.discard(sums, norms)  # from an earlier micro-batch: this one wins
                self._reduce_output(p, e, x)
        if p.c_grad < 0 or not x.requires_grad:
            return
        node = bn_node(x, y)
        if node is None or ey.grad_cols is not None:
            self._want_grad(p, e, x)
            return
        ey.grad_cols = []  # dL/dy's columns: y's own point and any that share y add theirs
        derive = None  # (in the hooks) both norms from one pass over dL/dy: gradlab.probes.bn_grads
        if self._deferred is None and p.j + 1 in self._bn_stats.where:
            derive = (p.j + 1, self._saved_of(y, ey), self._bn_stats.gamma_beta())
        node.register_hook(partial(self._on_bn_grad, ey.grad_cols, p.c_grad, derive))

    def _defer(self, pt: _Point, e: _Seen, h: torch.Tensor) -> None:
        q = self._deferred
        derived = e.derived is not None
        if derived and pt.c_cnt < 0:
            return
        if e.k is None:
            e.k = q.sample(h, self._sample_size(h))
        if pt.c_sum >= 0 and not derived:
            q.want(e.k, SUM, pt.c_sum)
        if pt.c_norm >= 0 and not derived:
            q.want(e.k, NORM, pt.c_norm)
        if pt.c_cnt >= 0:
            q.want(e.k, COUNT, pt.c_cnt)

    def _reduce_now(self, pt: _Point, e: _Seen, d: torch.Tensor) -> None:
        vals = self._vals
        if e.derived is None:  # (else BNStats writes the sum and norm)
            if pt.c_sum >= 0:
                if e.sum is None:
                    e.sum = total(d)
                vals[pt.c_sum] = e.sum
            if pt.c_norm >= 0:
                if e.norm is None:
                    e.norm = norm(d)
                vals[pt.c_norm] = e.norm
        if pt.c_cnt >= 0:
            if e.pos is None:
                e.pos = self._count(d)
            vals[pt.c_cnt] = e.pos

    @_eager
    def _on_grad(self, cols: list[int], g: torch.Tensor) -> None:
        self._grad_norm(cols, g)

    def _grad_norm(self, cols: list[int], g: torch.Tensor) -> None:
        if self._deferred is not None:
            self._deferred.grad(g.detach() if g.requires_grad else g, cols)
            return
        restore = self._limit_threads(g)
        try:
            v = norm(g.detach() if g.requires_grad else g)
        finally:
            if restore:
                torch.set_num_threads(restore)
        vals = self._vals
        for c in cols:
            vals[c] = v

    @_eager
    def _on_bn_grad(self, cols: list[int], col_x: int, derive, grad_inputs, grad_outputs) -> None:
        """A BatchNorm's backward ran: ||dL/dy|| into ``cols``, ||dL/dx|| into ``col_x``,
        derived at step() if ``derive`` (key, saved statistics, gammas and betas) allows."""
        dy = grad_outputs[0] if grad_outputs else None
        if derive is not None and dy is not None:
            restore = self._limit_threads(dy) if self.cpu_threads else 0
            try:
                if self._bn_grads.add(derive[0], grad_inputs, dy, derive[1], derive[2], cols, col_x):
                    return
            finally:
                if restore:
                    torch.set_num_threads(restore)
        dx = grad_inputs[0] if grad_inputs else None
        for g, c in ((dy if cols else None, cols), (dx, [col_x])):
            if g is not None:
                self._grad_norm(c, g)

    def _sample_size(self, d: torch.Tensor) -> int | None:
        """How many leading examples of ``d`` the activation statistics use (None: all)."""
        n = self.act_sample
        return n if n and d.dim() > 1 and d.shape[0] > n else None

    def _sample(self, d: torch.Tensor) -> torch.Tensor:
        """The first `act_sample` examples of a batch (a view): activation statistics and
        branch ratios are estimated on them; gradients always use the whole batch."""
        n = self._sample_size(d)
        return d if n is None else d.narrow(0, 0, n)

    def _sample_numel(self, d: torch.Tensor) -> int:
        n = self._sample_size(d)
        return d.numel() if n is None else d.numel() // d.shape[0] * n

    @_eager
    def _on_block_input(self, b: int, module: nn.Module, args) -> None:
        if not (module.training and torch.is_grad_enabled()) or not args:
            return
        x = args[0]
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return
        e = self._seen_entry(x)
        if self._deferred is not None:
            if e.k is None:
                e.k = self._deferred.sample(x, self._sample_size(x))
            self._deferred.want(e.k, NORM, self._bc_x[b])
            return
        if e.norm is None:
            e.norm = self._with_threads_for(x, norm, self._sample(x.detach()))
        self._vals[self._bc_x[b]] = e.norm

    # ------------------------------------------------------------------ stepping

    @property
    def recording(self) -> bool:
        """True when the next forward is a recorded step (its hooks are attached).

        A training loop that compiles the model can run the eager module on these steps and
        the compiled one on all others, so that compiled code never meets a hook."""
        return self._armed

    @property
    def reductions(self) -> str:
        """Where the activation and gradient reductions run: "hooks" (in each hook, the
        default on a CPU) or "step" (deferred to step(), the default on CUDA)."""
        return "step" if self._deferred is not None else "hooks"

    @property
    def current_step(self) -> int:
        """The number of the step whose forward runs next."""
        return self._step

    def set_step(self, step: int) -> None:
        """Set the number of the next step (e.g. when resuming) and arm the hooks for it."""
        self._require_running()
        self._step = int(step)
        self._reset_step_state()
        self._set_armed(self.schedule(self._step))

    def step(self, step: int | None = None) -> None:
        """Record the step that just ran (if scheduled), then advance to the next one.

        Call after ``loss.backward()`` and before the next ``zero_grad``. ``step`` is the
        number of the step that just ran (default: the recorder's own counter); the next
        forward is ``step + 1``, and the hooks are attached for it only if it is scheduled.
        """
        self._require_running()
        s = self._step if step is None else int(step)
        if self.schedule(s):
            self._record(s, outputs=self._armed)
        if self.histograms_enabled and s % self.hist_every == 0:
            self._record_histograms(s)
        self._reset_step_state()
        self._step = s + 1
        self._set_armed(self.schedule(self._step))

    def _require_running(self) -> None:
        if not self._started:
            raise RecorderError("The Recorder is not started; use gradlab.watch(model) or Recorder(model).start().")
        if self._stopped:
            raise RecorderError("The Recorder is stopped; start a new one with gradlab.watch(model).")

    def _reset_step_state(self) -> None:
        for j in self._fed_out:  # a fed point's output that its BatchNorm never took
            self._unpair(self._points[j])
        self._fed_out.clear()
        self._vals = list(self._template)
        self._numel_row = [0] * len(self._points)
        self._seen.clear()
        self._bn_stats.clear()
        self._bn_grads.clear()
        if self._deferred is not None:
            self._deferred.clear()

    @torch.no_grad()
    def _param_values(self) -> None:
        t = self._targets
        vals = self._vals
        weights = self._weights
        if self._pc_grad:
            idx, grads = [], []
            for i, p in enumerate(t.params):
                g = p.param.grad
                if g is not None and g.layout == torch.strided:
                    idx.append(i)
                    grads.append(g)
            if grads:
                for i, v in zip(idx, foreach_norm(grads)):
                    vals[self._pc_grad[i]] = v
        if self._pc_weight and weights:
            for c, v in zip(self._pc_weight, foreach_norm(weights)):
                vals[c] = v
        if self._pc_update and weights:
            if self._prev is None or len(self._prev) != len(weights):
                for c in self._pc_update:
                    vals[c] = self._nan
                self._prev = [w.clone() for w in weights]
            else:
                try:
                    torch._foreach_sub_(self._prev, weights)  # prev - w in place: the same norm as w - prev
                    for c, v in zip(self._pc_update, foreach_norm(self._prev)):
                        vals[c] = v
                    torch._foreach_copy_(self._prev, weights)
                except BaseException:
                    self._prev = None  # half updated: the next record starts over (NaN)
                    raise

    def _record(self, s: int, outputs: bool) -> None:
        params = self._targets.params
        if params and params[0].param.device != self._device:
            raise RecorderError(
                f"The model moved from {self._device} to {params[0].param.device} after watch(); "
                "move it to its device first, then call gradlab.watch(model)."
            )
        q = self._deferred
        if not outputs:
            self._vals = list(self._template)  # stray values from an unarmed forward: none expected
            self._bn_stats.clear()
            self._bn_grads.clear()
            if q is not None:
                q.clear()
        self._param_values()
        slot = self._slot
        vals = self._vals
        if q is not None:
            q.gradient_values(vals)
        row = self._buf[slot, : self._ncol]
        if self._ncol:
            torch.stack(vals, out=row)
        unset = self._unset
        written = self._slot_written[slot]
        written[:] = [v is not unset for v in vals]
        if q is not None:
            written[q.write_activations(row)] = True
            q.clear()
        written[self._bn_stats.write(row)] = True
        written[self._bn_grads.write(row)] = True
        self._bn_stats.clear()
        self._bn_grads.clear()
        if outputs and not self._warned_no_outputs and self._out_cols.size and self._pc_grad:
            if not written[self._out_cols].any() and written[self._pc_grad].any():
                self._warned_no_outputs = True
                warnings.warn(
                    f"gradlab: step {s} was recorded with hooks attached, but no probe point "
                    "produced output statistics (only parameter statistics were recorded). "
                    "Does the model's forward bypass its modules' __call__ (e.g. "
                    "F.linear(x, layer.weight) instead of layer(x)), or run compiled code "
                    "that skips module hooks?",
                    RuntimeWarning,
                    stacklevel=3,
                )
        self._slot_numel[slot] = self._numel_row
        self._slot_steps[slot] = s
        self._slot = slot + 1
        if self._slot == self.buffer_steps:
            self.flush()

    def _record_histograms(self, s: int) -> None:
        grads = [p.param.grad for p in self._targets.params]
        grads = [g if g is not None and g.layout == torch.strided else None for g in grads]
        if not any(g is not None for g in grads):
            return
        H.grad_histograms(grads, self._hbuf[self._hslot])
        self._hslot_steps[self._hslot] = s
        self._hslot += 1
        if self._hslot == self.buffer_steps:
            self.flush()

    # ------------------------------------------------------------------ reading

    def flush(self) -> pd.DataFrame:
        """Copy the device buffer to the host (the only host sync); return the new rows
        (also appended to the history that :meth:`frame` returns)."""
        if not self._started:
            return _empty_frame()
        new = _empty_frame()
        n = self._slot
        if n:
            raw = self._buf[:n, : self._ncol].cpu().numpy().astype(np.float64)
            written = self._slot_written[:n].copy()
            numel = self._slot_numel[:n].copy()
            steps = self._slot_steps[:n].copy()
            self._slot = 0
            new = self._derive(raw, written, numel, steps)
            self._detect_nonfinite(raw, written, steps)
            if len(new):
                self._history.append(new)
                self._frame_cache = None
        if self.histograms_enabled and self._hslot:
            hn = self._hslot
            counts = self._hbuf[:hn].cpu().numpy()
            hsteps = self._hslot_steps[:hn].copy()
            self._hslot = 0
            self._hist_history.append(self._hist_frame(counts, hsteps))
        return new

    def frame(self) -> pd.DataFrame:
        """Every row recorded so far (flushes first): step(int64), layer(str), index(int32),
        kind(str), stat(str), value(float64)."""
        self.flush()
        if self._frame_cache is None:
            if not self._history:
                self._frame_cache = _empty_frame()
            elif len(self._history) == 1:
                self._frame_cache = self._history[0]
            else:
                self._frame_cache = pd.concat(self._history, ignore_index=True)
                self._history = [self._frame_cache]
        return self._frame_cache.copy()

    def histograms(self) -> pd.DataFrame:
        """Gradient histograms (flushes first): step, layer, index, kind, bin, lower, upper
        (edges of |g|), count. Empty unless the recorder was made with histograms=True."""
        self.flush()
        if not self._hist_history:
            return _empty_hist_frame()
        return pd.concat(self._hist_history, ignore_index=True)

    @property
    def nonfinite(self) -> dict | None:
        """{"step", "layer", "what": "grad"|"activation"|"weight"} of the first non-finite
        value, as of the last flush; None if none was seen."""
        return None if self._nonfinite is None else dict(self._nonfinite)

    @property
    def probe_points(self) -> list[ProbePoint]:
        """The resolved probe points in depth order (write them into the run directory)."""
        self._require_started()
        return list(self._targets.points)

    @property
    def param_names(self) -> list[str]:
        self._require_started()
        return [p.name for p in self._targets.params]

    def _require_started(self) -> None:
        if self._targets is None:
            raise RecorderError("The Recorder is not started; use gradlab.watch(model) or Recorder(model).start().")

    # ------------------------------------------------------------------ derivation (host)

    def _derive(self, raw, written, numel, steps) -> pd.DataFrame:
        n = len(steps)
        parts: list[tuple[str, list, np.ndarray, np.ndarray]] = []  # stat, keys, values[n,m], ok[n,m]
        want = set(self.stats)
        pk, ok_, bk = self._pkeys, self._okeys, self._bkeys

        def cols(c):  # column -1: a point without this statistic (NaN, never written)
            c = np.asarray(c, dtype=np.int64)
            has = c >= 0
            values = np.full((n, len(c)), np.nan)
            ok = np.zeros((n, len(c)), dtype=bool)
            values[:, has], ok[:, has] = raw[:, c[has]], written[:, c[has]]
            return values, ok

        with np.errstate(divide="ignore", invalid="ignore"):
            if self._pc_grad:
                g, gw = cols(self._pc_grad)
                if S.GRAD_NORM in want:
                    parts.append((S.GRAD_NORM, pk, g, gw))
            if self._pc_weight:
                w, ww = cols(self._pc_weight)
                if S.WEIGHT_NORM in want:
                    parts.append((S.WEIGHT_NORM, pk, w, ww))
            if S.GRAD_WEIGHT_RATIO in want:
                parts.append((S.GRAD_WEIGHT_RATIO, pk, g / w, gw & ww))
            if self._pc_update:
                parts.append((S.UPDATE_NORM, pk, *cols(self._pc_update)))

            pts = self._points
            measured = numel > 0
            if S.ACT_MEAN in want or S.ACT_STD in want:
                s1, s1w = cols([p.c_sum for p in pts])
                mean = s1 / numel
                if S.ACT_MEAN in want:
                    parts.append((S.ACT_MEAN, ok_, mean, s1w & measured))
                if S.ACT_STD in want:
                    nrm, nrmw = cols([p.c_norm for p in pts])
                    var = np.maximum(nrm * nrm / numel - mean * mean, 0.0)
                    var = np.where(np.isfinite(nrm) & np.isfinite(mean), var, np.nan)
                    parts.append((S.ACT_STD, ok_, np.sqrt(var), s1w & nrmw & measured))
            if S.ACT_ZERO_FRAC in want:
                cnt, cntw = cols([p.c_cnt for p in pts])
                parts.append((S.ACT_ZERO_FRAC, ok_, 1.0 - np.rint(cnt / COUNT_UNIT) / numel, cntw & measured))
            if S.ACT_GRAD_NORM in want:
                parts.append((S.ACT_GRAD_NORM, ok_, *cols([p.c_grad for p in pts])))
            if self._bc_x:
                fx, fxw = cols([self._points[b.branch].c_norm for b in self._targets.blocks])
                x, xw = cols(self._bc_x)
                parts.append((S.BRANCH_RATIO, bk, fx / x, fxw & xw))

        frames = []
        for stat, keys, values, ok in parts:
            m = len(keys)
            if m == 0 or n == 0:
                continue
            rows, kcols = np.nonzero(ok)
            if not len(rows):
                continue
            layers = np.array([k[0] for k in keys], dtype=object)
            idx = np.array([k[1] for k in keys], dtype=np.int32)
            kinds = np.array([k[2] for k in keys], dtype=object)
            frames.append(
                pd.DataFrame(
                    {
                        "step": steps[rows].astype(np.int64),
                        "layer": layers[kcols],
                        "index": idx[kcols],
                        "kind": kinds[kcols],
                        "stat": np.full(len(rows), stat, dtype=object),
                        "value": values[rows, kcols].astype(np.float64),
                    }
                )
            )
        if not frames:
            return _empty_frame()
        df = pd.concat(frames, ignore_index=True)
        df = df.sort_values(["step", "index", "layer"], kind="stable", ignore_index=True)
        return _typed(df)

    def _detect_nonfinite(self, raw, written, steps) -> None:
        if self._nonfinite is not None:
            return
        bad = ~np.isfinite(raw) & written
        bad[:, self._pc_update] = False  # NaN by definition on the first record
        if not bad.any():
            return
        t = self._targets
        # what -> [(column, (index, priority), layer)]; the best hit of the first bad row wins
        groups: dict[str, list[tuple[int, tuple[int, int], str]]] = {"weight": [], "activation": [], "grad": []}
        for i, p in enumerate(t.params):
            if self._pc_weight:
                groups["weight"].append((self._pc_weight[i], (-p.index, 0), p.name))
            if self._pc_grad:
                groups["grad"].append((self._pc_grad[i], (p.index, 0), p.name))
        for pt, p in zip(self._points, t.points):
            for c in (pt.c_sum, pt.c_norm, pt.c_cnt):
                if c >= 0:
                    groups["activation"].append((c, (-p.index, 0), p.name))
            if pt.c_grad >= 0:
                # at equal depth dL/dh is computed before dL/dW
                groups["grad"].append((pt.c_grad, (p.index, 1), p.name))
        for c, blk in zip(self._bc_x, t.blocks):
            groups["activation"].append((c, (-blk.index, 0), blk.name))
        first_row = int(np.nonzero(bad.any(axis=1))[0][0])
        for what in ("weight", "activation", "grad"):
            hits = [(key, layer) for c, key, layer in groups[what] if bad[first_row, c]]
            if hits:
                # weights and activations: the shallowest; gradients: the deepest (backward starts there)
                _, layer = max(hits, key=lambda h: h[0])
                self._nonfinite = {"step": int(steps[first_row]), "layer": layer, "what": what}
                return

    def _hist_frame(self, counts: np.ndarray, steps: np.ndarray) -> pd.DataFrame:
        n, P, K = counts.shape
        edges = H.bin_edges()
        keys = self._pkeys
        step = np.repeat(steps, P * K)
        layer = np.tile(np.repeat(np.array([k[0] for k in keys], dtype=object), K), n)
        index = np.tile(np.repeat(np.array([k[1] for k in keys], dtype=np.int32), K), n)
        kind = np.tile(np.repeat(np.array([k[2] for k in keys], dtype=object), K), n)
        b = np.tile(np.arange(K, dtype=np.int32), n * P)
        df = pd.DataFrame(
            {
                "step": step.astype(np.int64),
                "layer": layer,
                "index": index,
                "kind": kind,
                "bin": b,
                "lower": edges[b],
                "upper": edges[b + 1],
                "count": counts.reshape(-1).round().astype(np.int64),
            }
        )
        for c in ("layer", "kind"):
            df[c] = df[c].astype(str)
        return df

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """Step counter, previous weights (for update_norm) and the first non-finite value.

        Tensors and plain Python only (loadable with ``torch.load(weights_only=True)``).
        Rows are not part of the state: flush and persist them before checkpointing.
        """
        self._require_started()
        return {
            "version": STATE_VERSION,
            "step": int(self._step),
            "param_names": self.param_names,
            "prev_weights": None if self._prev is None else [w.detach().clone() for w in self._prev],
            "nonfinite": self.nonfinite,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (the recorder must be started on the same model)."""
        self._require_running()
        if state.get("version") != STATE_VERSION:
            raise RecorderError(f"Recorder state version {state.get('version')!r} is not {STATE_VERSION}.")
        if list(state["param_names"]) != self.param_names:
            raise RecorderError(
                "Recorder state was saved for a model with different parameters; "
                "resume with the same model architecture."
            )
        prev = state.get("prev_weights")
        if prev is None:
            self._prev = None
        else:
            self._prev = [
                w.detach().to(device=p.param.device, dtype=p.param.dtype).clone()
                for w, p in zip(prev, self._targets.params)
            ]
        nf = state.get("nonfinite")
        self._nonfinite = None if nf is None else dict(nf)
        self.set_step(int(state["step"]))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(
        {"step": np.int64, "layer": str, "index": np.int32, "kind": str, "stat": str, "value": np.float64}
    )


def _empty_frame() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: [] for c in FRAME_COLUMNS}))


def _empty_hist_frame() -> pd.DataFrame:
    df = pd.DataFrame({c: [] for c in HIST_COLUMNS})
    return df.astype(
        {
            "step": np.int64,
            "layer": str,
            "index": np.int32,
            "kind": str,
            "bin": np.int32,
            "lower": np.float64,
            "upper": np.float64,
            "count": np.int64,
        }
    )


def watch(
    model: nn.Module,
    every: int = 50,
    stats: Iterable[str] | None = None,
    dense_until: int = 100,
    dense_every: int = 1,
    histograms: bool = False,
    **kwargs,
) -> Recorder:
    """Start recording ``model``; returns the started :class:`Recorder` (also a context
    manager that stops it on exit). See :class:`Recorder` for the arguments."""
    return Recorder(model, every, stats, dense_until, dense_every, histograms, **kwargs).start()
