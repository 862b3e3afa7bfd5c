"""The hooks of a recorded step and the scratch state they share until ``step()``.

Forward hooks on the probe points' modules reduce each output (or, deferred, copy its
sample: gradlab.recorder.deferred), gradient hooks take ||dL/dh||, and forward pre-hooks
on residual blocks take ||x||. Each value is a 0-dim device tensor put in its column of
``vals`` (gradlab.recorder.layout); ``write()`` then fills the step's row. A conv whose
output goes only to a BatchNorm is measured by that BatchNorm's hooks from its saved batch
statistics (gradlab.recorder.bn_stats, bn_grads); on the first recorded step a checking
hook confirms the pairing, and a pair the forward routes otherwise is dissolved for good.
Why it is built this way, and what it costs: docs/recorder.md.
"""

from __future__ import annotations

import math
import weakref
from functools import partial

import numpy as np
import torch
import torch.nn as nn

from gradlab.recorder.bn_grads import BNGrads
from gradlab.recorder.bn_stats import BNStats, bn_node, saved_stats
from gradlab.recorder.deferred import COUNT, NORM, SUM, Deferred
from gradlab.recorder.layout import Layout, Point
from gradlab.recorder.reductions import F32, count, flat, norm, total
from gradlab.recorder.targets import Targets

__all__ = ["StepHooks", "eager"]


def eager(fn):
    """Run a hook eagerly under torch.compile: Dynamo would otherwise try to compile the
    hook's own frame and recompile it for every new output tensor (identity guards)."""
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    return disable(fn) if disable is not None else fn


class SeenOutput:
    """Reductions of one output tensor during one forward, shared by the points that see it
    (a BN output and the ``branch_out`` point after it, a block output and the next block's
    input are reduced once)."""

    __slots__ = ("ref", "version", "sum", "norm", "pos", "grad_cols", "sample", "derived", "saved")

    def __init__(self, h: torch.Tensor):
        self.ref = weakref.ref(h)
        self.version = h._version
        self.sum = self.norm = self.pos = None
        self.sample: int | None = None  # deferred reductions: its sample's number
        self.grad_cols: list[int] | None = None
        self.derived = None  # a BatchNorm output: its key in BNStats, whose sum and norm it gets
        self.saved = None  # a BatchNorm output: the statistics its backward node saved (False: none)


class StepHooks:
    """Attaches the measuring hooks for a recorded step and holds what they measured.

    act_sample: activation statistics use the first ``act_sample`` examples of a batch
    (None: all); cpu_threads: intra-op threads of the reductions on CPU tensors (None:
    PyTorch's setting); defer: reduce at step() (gradlab.recorder.deferred) instead of in
    each hook.
    """

    def __init__(self, targets: Targets, layout: Layout, device: torch.device, act_sample: int | None,
                 cpu_threads: int | None, defer: bool):  # fmt: skip
        self.modules = targets.modules
        self.blocks = targets.blocks
        self.points = layout.points
        self.block_input = layout.block_input
        self.act_sample = act_sample
        self.cpu_threads = cpu_threads
        self.deferred = Deferred(device) if defer else None
        self.bn_stats = BNStats(device, {pt.position: self.modules[pt.position] for pt in self.points if pt.is_bn})
        self.bn_grads = BNGrads(device, self.bn_stats.where)
        self.unset = torch.full((), math.nan, dtype=F32, device=device)  # "not measured"
        self.template = [self.unset] * layout.width
        self.vals: list[torch.Tensor] = list(self.template)  # this step's value of every column
        self.numel = [0] * len(self.points)  # elements each point's sums and norms cover
        self.seen: dict[int, SeenOutput] = {}  # id(tensor) -> its reductions, this forward
        self.fed_out: dict[int, torch.Tensor] = {}  # unchecked fed points' outputs, this forward
        self.scratch: dict[tuple, torch.Tensor] = {}  # reused buffers of the positive counts
        self.handles: list = []
        self.armed = False
        self.rearm = False  # a pairing changed: re-attach the hooks before the next recorded step

    # ------------------------------------------------------------------ attaching

    def arm(self, armed: bool) -> None:
        """Attach the hooks (for a recorded step's forward) or remove them."""
        if self.rearm and self.armed:
            self.remove()
            self.armed = False
        self.rearm = False
        if armed == self.armed:
            return
        if armed:
            for pt, module in zip(self.points, self.modules):
                if pt.hooked:
                    self.handles.append(module.register_forward_hook(partial(self._on_output, pt)))
                elif pt.fed and pt.active and not pt.checked:
                    self.handles.append(module.register_forward_hook(partial(self._note_fed, pt)))
            for b, block in enumerate(self.blocks if self.block_input else ()):
                self.handles.append(block.module.register_forward_pre_hook(partial(self._on_block_input, b)))
        else:
            self.remove()
        self.armed = armed

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    # ------------------------------------------------------------------ the step's state

    def reset(self) -> None:
        """Forget this step's values (after it was recorded, or when it was not)."""
        for j in self.fed_out:  # a fed point's output that its BatchNorm never took
            self._unpair(self.points[j])
        self.fed_out.clear()
        self.numel = [0] * len(self.points)
        self.seen.clear()
        self.discard()

    def discard(self) -> None:
        """Drop stray values of a forward that ran unarmed (none are expected)."""
        self.vals = list(self.template)
        self.bn_stats.clear()
        self.bn_grads.clear()
        if self.deferred is not None:
            self.deferred.clear()

    def write(self, row: torch.Tensor, written: np.ndarray) -> None:
        """Fill the step's ``row`` on the device and mark in ``written`` the columns set."""
        q = self.deferred
        vals = self.vals
        if q is not None:
            q.gradient_values(vals)
        if len(vals):
            torch.stack(vals, out=row)
        unset = self.unset
        written[:] = [v is not unset for v in vals]
        if q is not None:
            written[q.write_activations(row)] = True
            q.clear()
        written[self.bn_stats.write(row)] = True
        written[self.bn_grads.write(row)] = True
        self.bn_stats.clear()
        self.bn_grads.clear()

    def clear(self) -> None:
        """Release every tensor held (the recorder stopped)."""
        self.scratch.clear()
        self.seen.clear()
        self.bn_stats.clear()
        self.bn_grads.clear()
        self.fed_out.clear()
        if self.deferred is not None:
            self.deferred.clear()  # copies and gradients of a step that was never recorded

    # ------------------------------------------------------------------ helpers

    def _scratch_for(self, h: torch.Tensor) -> torch.Tensor:
        """A reused 1-D buffer of h's numel, dtype and device (views kept: no op per call)."""
        n = h.numel()
        view = self.scratch.get((h.dtype, h.device, n))
        if view is None:
            key = (h.dtype, h.device)
            buf = self.scratch.get(key)
            if buf is None or buf.numel() < n:
                self.scratch = {k: v for k, v in self.scratch.items() if k[:2] != key}  # views of the old one
                buf = self.scratch[key] = torch.empty(n, dtype=h.dtype, device=h.device)
            view = self.scratch[(h.dtype, h.device, n)] = buf[:n]
        return view

    def _seen_entry(self, h: torch.Tensor) -> SeenOutput:
        e = self.seen.get(id(h))
        if e is None or e.ref() is not h or e.version != h._version:
            e = SeenOutput(h)
            self.seen[id(h)] = e
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

    # ------------------------------------------------------------------ forward hooks

    @eager
    def _on_output(self, pt: Point, module: nn.Module, args, output) -> None:
        if not torch.is_grad_enabled():
            return
        feeder = pt.feeder
        if feeder is not None and not feeder.checked:
            feeder = self._check_pair(pt, args)
        own = pt.active and module.training
        fed = feeder is not None and feeder.active and args and self.modules[feeder.position].training
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
                if pt.is_bn and (pt.sum_col >= 0 or pt.norm_col >= 0):
                    self._derive_output(pt, h, e)
                self._measure(pt, h, e)
        finally:
            if restore:
                torch.set_num_threads(restore)

    @eager
    def _note_fed(self, pt: Point, module: nn.Module, args, output) -> None:
        """An unchecked fed point's output, for its BatchNorm's hook to compare with its input."""
        if pt.checked:  # a later micro-batch of the step that checked it
            return
        h = self._output_tensor(output) if module.training and torch.is_grad_enabled() else None
        if h is not None:
            self.fed_out[pt.position] = h

    def _check_pair(self, q: Point, args) -> Point | None:
        """The first time a BatchNorm's hook runs after its fed point's: is its input that
        point's output? Yes: the pair holds (the point's checking hook goes). No (the model
        routes the output elsewhere first): unpair for good and measure the point on its own
        output now, as on every later step. Returns the feeder to measure, if any."""
        p = q.feeder
        h = self.fed_out.pop(p.position, None)
        if h is None:
            return None  # the point did not run (in training) before this BatchNorm: no verdict
        self.rearm = True
        if args and args[0] is h:
            p.checked = True
            return p
        self._unpair(p)
        self._with_threads_for(h, self._measure, p, h)
        return None

    def _unpair(self, p: Point) -> None:
        p.fed = False
        self.points[p.position + 1].feeder = None
        self.rearm = True

    def _measure(self, pt: Point, h: torch.Tensor, e: SeenOutput | None = None) -> None:
        e = e or self._seen_entry(h)
        self._reduce_output(pt, e, h)
        if pt.grad_col >= 0 and h.requires_grad:
            self._want_grad(pt, e, h)

    def _derive_output(self, pt: Point, y: torch.Tensor, e: SeenOutput) -> None:
        """BatchNorm output y's sum and norm from its batch statistics (gradlab.recorder.bn_stats),
        for every point that sees y; its other statistics are reduced on its sample."""
        if e.derived is None and e.sum is None and e.norm is None and e.sample is None:
            n = self._sample_size(y)
            if self.bn_stats.add_output(pt.position, y, n / y.shape[0] if n else 1.0, self._saved_of(y, e)):
                e.derived = pt.position

    def _saved_of(self, y: torch.Tensor, e: SeenOutput):
        """The batch statistics BatchNorm output y's backward node saved (read once per y)."""
        if e.saved is None:
            e.saved = (saved_stats(y, y.shape[1]) if y.dim() >= 2 else None) or False
        return e.saved or None

    def _reduce_output(self, pt: Point, e: SeenOutput, h: torch.Tensor) -> None:
        if e.derived is not None:
            self.bn_stats.share(e.derived, pt.sum_col, pt.norm_col)
        if self.deferred is not None:
            self._defer(pt, e, h)
        elif pt.count_col >= 0 or e.derived is None:
            self._reduce_now(pt, e, self._sample(h.detach()))  # reductions must not extend the autograd graph
        self.numel[pt.position] = self._sample_numel(h)

    def _want_grad(self, pt: Point, e: SeenOutput, h: torch.Tensor) -> None:
        """Column pt.grad_col gets ||dL/dh||, from h's gradient hook (one per tensor)."""
        if e.grad_cols is None:
            e.grad_cols = [pt.grad_col]
            h.register_hook(partial(self._on_grad, e.grad_cols))
        elif pt.grad_col not in e.grad_cols:
            e.grad_cols.append(pt.grad_col)

    def _measure_fed(self, p: Point, x, y: torch.Tensor, ey: SeenOutput) -> None:
        """Point p's output x went only into this BatchNorm, whose output is y
        (``ProbePoint.bn_next``): x's sum and norm come from the batch statistics the
        BatchNorm saved (gradlab.recorder.bn_stats), dL/dx from the BatchNorm's backward node,
        which also serves dL/dy. Whatever cannot be had that way is measured on x itself."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.is_sparse:
            return
        e = self._seen_entry(x)
        if p.sum_col >= 0 or p.norm_col >= 0:
            sums = [p.sum_col] if p.sum_col >= 0 else []
            norms = [p.norm_col] if p.norm_col >= 0 else []
            fresh = e.sum is None and e.norm is None and e.sample is None
            if fresh and x.dim() >= 2 and self.bn_stats.add(x, self._saved_of(y, ey), sums, norms):
                self.numel[p.position] = x.numel()
            else:
                self.bn_stats.discard(sums, norms)  # from an earlier micro-batch: this one wins
                self._reduce_output(p, e, x)
        if p.grad_col < 0 or not x.requires_grad:
            return
        node = bn_node(x, y)
        if node is None or ey.grad_cols is not None:
            self._want_grad(p, e, x)
            return
        ey.grad_cols = []  # dL/dy's columns: y's own point and any that share y add theirs
        derive = None  # (in the hooks) both norms from one pass over dL/dy: gradlab.recorder.bn_grads
        if self.deferred is None and p.position + 1 in self.bn_stats.where:
            derive = (p.position + 1, self._saved_of(y, ey), self.bn_stats.gamma_beta())
        node.register_hook(partial(self._on_bn_grad, ey.grad_cols, p.grad_col, derive))

    def _defer(self, pt: Point, e: SeenOutput, h: torch.Tensor) -> None:
        q = self.deferred
        derived = e.derived is not None
        if derived and pt.count_col < 0:
            return
        if e.sample is None:
            e.sample = q.sample(h, self._sample_size(h))
        if pt.sum_col >= 0 and not derived:
            q.want(e.sample, SUM, pt.sum_col)
        if pt.norm_col >= 0 and not derived:
            q.want(e.sample, NORM, pt.norm_col)
        if pt.count_col >= 0:
            q.want(e.sample, COUNT, pt.count_col)

    def _reduce_now(self, pt: Point, e: SeenOutput, d: torch.Tensor) -> None:
        vals = self.vals
        if e.derived is None:  # (else BNStats writes the sum and norm)
            if pt.sum_col >= 0:
                if e.sum is None:
                    e.sum = total(d)
                vals[pt.sum_col] = e.sum
            if pt.norm_col >= 0:
                if e.norm is None:
                    e.norm = norm(d)
                vals[pt.norm_col] = e.norm
        if pt.count_col >= 0:
            if e.pos is None:
                e.pos = self._count(d)
            vals[pt.count_col] = e.pos

    @eager
    def _on_block_input(self, b: int, module: nn.Module, args) -> None:
        if not (module.training and torch.is_grad_enabled()) or not args:
            return
        x = args[0]
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return
        e = self._seen_entry(x)
        if self.deferred is not None:
            if e.sample is None:
                e.sample = self.deferred.sample(x, self._sample_size(x))
            self.deferred.want(e.sample, NORM, self.block_input[b])
            return
        if e.norm is None:
            e.norm = self._with_threads_for(x, norm, self._sample(x.detach()))
        self.vals[self.block_input[b]] = e.norm

    # ------------------------------------------------------------------ gradient hooks

    @eager
    def _on_grad(self, cols: list[int], g: torch.Tensor) -> None:
        self._grad_norm(cols, g)

    def _grad_norm(self, cols: list[int], g: torch.Tensor) -> None:
        if self.deferred is not None:
            self.deferred.grad(g.detach() if g.requires_grad else g, cols)
            return
        restore = self._limit_threads(g)
        try:
            v = norm(g.detach() if g.requires_grad else g)
        finally:
            if restore:
                torch.set_num_threads(restore)
        vals = self.vals
        for c in cols:
            vals[c] = v

    @eager
    def _on_bn_grad(self, cols: list[int], col_x: int, derive, grad_inputs, grad_outputs) -> None:
        """A BatchNorm's backward ran: ||dL/dy|| into ``cols``, ||dL/dx|| into ``col_x``,
        derived at step() if ``derive`` (key, saved statistics, gammas and betas) allows."""
        dy = grad_outputs[0] if grad_outputs else None
        if derive is not None and dy is not None:
            restore = self._limit_threads(dy) if self.cpu_threads else 0
            try:
                if self.bn_grads.add(derive[0], grad_inputs, dy, derive[1], derive[2], cols, col_x):
                    return
            finally:
                if restore:
                    torch.set_num_threads(restore)
        dx = grad_inputs[0] if grad_inputs else None
        for g, c in ((dy if cols else None, cols), (dx, [col_x])):
            if g is not None:
                self._grad_norm(c, g)
