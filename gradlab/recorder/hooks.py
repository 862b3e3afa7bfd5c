"""The hooks of a recorded step and the scratch state they share until ``step()``.

Forward hooks on the probe points' modules hand each output to the reduction strategy
(gradlab.recorder.in_hook reduces it at once, gradlab.recorder.deferred keeps a sample for
``step()``), gradient hooks hand over dL/dh, and forward pre-hooks on residual blocks take
||x||. What each point needs is its columns' (gradlab.recorder.layout); ``write()`` then
fills the step's row. A conv whose output goes only to a BatchNorm is measured by that
BatchNorm's hooks from its saved batch statistics (gradlab.recorder.bn_stats, bn_grads);
on the first recorded step a checking hook confirms the pairing, and a pair the forward
routes otherwise is dissolved for good. Why it is built this way, and what it costs:
docs/recorder.md.
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
from gradlab.recorder.compiled import eager, eager_while_armed
from gradlab.recorder.deferred import DeferredReductions
from gradlab.recorder.in_hook import InHookReductions
from gradlab.recorder.layout import Layout, PointColumns
from gradlab.recorder.mixed import MixedReductions
from gradlab.recorder.reductions import F32
from gradlab.recorder.statistics import INPUT_NORM, NORM, SUM
from gradlab.recorder.targets import Targets

__all__ = ["StepHooks"]


def with_threads(fn, limit: int):
    """``fn`` run with at most ``limit`` intra-op threads (the setting restored after)."""

    @eager
    def limited(*args):
        n = torch.get_num_threads()
        if n <= limit:
            return fn(*args)
        torch.set_num_threads(limit)
        try:
            return fn(*args)
        finally:
            torch.set_num_threads(n)

    return limited


class SeenOutput:
    """What was taken of one output tensor during one forward, shared by the points that see
    it (a BN output and the ``branch_out`` point after it, a block output and the next
    block's input are reduced once)."""

    __slots__ = ("ref", "version", "values", "grad_cols", "sample", "derived", "saved")

    def __init__(self, h: torch.Tensor):
        self.ref = weakref.ref(h)
        self.version = h._version
        self.values: dict = {}  # reduction -> its value (reduced in the hooks)
        self.sample: int | None = None  # deferred reductions: its sample's number
        self.grad_cols: list[int] | None = None
        self.derived = None  # a BatchNorm output: its key in BNStats, whose sum and norm it gets
        self.saved = None  # a BatchNorm output: the statistics its backward node saved (False: none)


class Tap:
    """A probe point as the hooks see it: the columns it fills, and whether the BatchNorm after
    it measures it (a pairing checked on the first recorded step, dissolved if the forward
    routes the output elsewhere)."""

    __slots__ = ("position", "is_bn", "channel_first", "reductions", "from_bn", "on_tensor", "bn_cols", "grad_col",
                 "active", "fed", "feeder", "checked")  # fmt: skip

    def __init__(self, cols: PointColumns):
        self.position = cols.position  # in Targets.points and Targets.modules
        self.is_bn = cols.is_bn
        self.channel_first = cols.channel_first
        self.reductions = cols.reductions  # (reduction, column) of its output
        self.from_bn = tuple(rc for rc in cols.reductions if rc[0].from_batchnorm)  # a BatchNorm can give these
        self.on_tensor = tuple(rc for rc in cols.reductions if not rc[0].from_batchnorm)
        self.bn_cols = (cols.col(SUM), cols.col(NORM))  # (sum, norm) columns; -1: none
        self.grad_col = cols.grad_col
        self.active = bool(cols.reductions) or cols.grad_col >= 0
        self.fed = cols.fed  # its output goes only to the next point, a BatchNorm, whose hooks measure it
        self.feeder: Tap | None = None  # (on that BatchNorm's tap) the tap it measures
        self.checked = False  # a recorded step saw the BatchNorm's input be this point's output

    @property
    def plain(self) -> bool:
        """Measured on its own output alone: no BatchNorm statistics and no fed point involved."""
        return self.feeder is None and not self.is_bn and not self.fed

    @property
    def hooked(self) -> bool:
        """Whether this point's module gets a measuring forward hook (for itself or its feeder)."""
        return not self.fed and (self.active or (self.feeder is not None and self.feeder.active))


class StepHooks:
    """Attaches the measuring hooks for a recorded step and holds what they measured.

    act_sample: activation statistics use the first ``act_sample`` examples of a batch
    (None: all); cpu_threads: intra-op threads of the hooks on a CPU (None: PyTorch's
    setting); defer: reduce at step() (gradlab.recorder.deferred) instead of in each hook
    (gradlab.recorder.in_hook).
    """

    def __init__(self, targets: Targets, layout: Layout, device: torch.device, act_sample: int | None,
                 cpu_threads: int | None, defer: bool):  # fmt: skip
        self.modules = targets.modules
        self.blocks = targets.blocks
        self.taps = [Tap(cols) for cols in layout.points]
        for j, tap in enumerate(self.taps[:-1]):
            if tap.fed:
                self.taps[j + 1].feeder = tap
        self.block_todo = [((NORM, c),) for c in layout.blocks.get(INPUT_NORM, [])]  # ||x|| of each block's input
        self.act_sample = act_sample
        self.thread_limit = cpu_threads if cpu_threads and device.type == "cpu" else None
        self.bn_stats = BNStats(device, {t.position: self.modules[t.position] for t in self.taps if t.is_bn})
        self.bn_grads = BNGrads(device, self.bn_stats.where)
        self.unset = torch.full((), math.nan, dtype=F32, device=device)  # "not measured"
        self.template = [self.unset] * layout.width
        self.base = layout.param_width  # the first column a hook fills
        self.vals: list[torch.Tensor] = list(self.template)  # this step's value of every column
        if defer == "step":
            self.reducer = DeferredReductions(device, self.vals, self._sample_size)
        elif defer == "mixed":
            self.reducer = MixedReductions(DeferredReductions(device, self.vals, self._sample_size),
                                           InHookReductions(self.vals, self._sample, self._scratch_for))
        else:
            self.reducer = InHookReductions(self.vals, self._sample, self._scratch_for)
        self.numel = [0] * len(self.taps)  # elements each point's sums and norms cover
        self.seen: dict[int, SeenOutput] = {}  # id(tensor) -> what was taken of it, this forward
        self.fed_out: dict[int, torch.Tensor] = {}  # unchecked fed points' outputs, this forward
        self.scratch: dict[tuple, torch.Tensor] = {}  # reused buffers of the elementwise passes
        self.handles: list = []
        self.armed = False
        self.rearm = False  # a pairing changed: re-attach the hooks before the next recorded step

    # ------------------------------------------------------------------ attaching

    def arm(self, armed: bool) -> None:
        """Attach the hooks (for a recorded step's forward) or remove them."""
        if self.rearm and self.armed:
            self._detach()
        self.rearm = False
        if armed == self.armed:
            return
        if armed:
            hook = self._hook
            for tap, module in zip(self.taps, self.modules):
                if tap.hooked:
                    on_output = self._on_plain_output if tap.plain else self._on_output
                    self.handles.append(module.register_forward_hook(hook(partial(on_output, tap))))
                elif tap.fed and tap.active and not tap.checked:
                    self.handles.append(module.register_forward_hook(hook(partial(self._note_fed, tap))))
            for b, block in enumerate(self.blocks if self.block_todo else ()):
                self.handles.append(block.module.register_forward_pre_hook(hook(partial(self._on_block_input, b))))
            self.armed = True
            eager_while_armed(True)  # compiled code runs eagerly now (gradlab.recorder.compiled)
        else:
            self._detach()

    def _detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        if self.armed:
            eager_while_armed(False)
        self.armed = False

    def _hook(self, fn):
        """``fn`` as registered: run under ``cpu_threads`` intra-op threads when that is set."""
        return fn if not self.thread_limit else with_threads(fn, self.thread_limit)

    # ------------------------------------------------------------------ the step's state

    def write(self, row: torch.Tensor, written: np.ndarray) -> None:
        """Fill the step's ``row`` on the device and mark in ``written`` the columns set."""
        self.reducer.finish()
        base, vals = self.base, self.vals[self.base :]  # (the parameters' columns: gradlab.recorder.params)
        unset = self.unset
        measured = [v is not unset for v in vals]
        if any(measured):  # values reduced in the hooks
            torch.stack(vals, out=row[base:])
        elif vals:  # none (all deferred, or none measured): "not measured" until the writers below say otherwise
            row[base:].fill_(math.nan)
        written[:base] = False
        written[base:] = measured
        written[self.reducer.write(row)] = True
        written[self.bn_stats.write(row)] = True
        written[self.bn_grads.write(row)] = True

    def clear(self) -> None:
        """Forget this step's values (after it was recorded, or when its forward ran unarmed)."""
        for j in self.fed_out:  # a fed point's output that its BatchNorm never took
            self._unpair(self.taps[j])
        self.fed_out.clear()
        self.numel = [0] * len(self.taps)
        self.seen.clear()
        self.vals[:] = self.template
        self.bn_stats.clear()
        self.bn_grads.clear()
        self.reducer.clear()

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
    def _on_output(self, tap: Tap, module: nn.Module, args, output) -> None:
        if not torch.is_grad_enabled():
            return
        feeder = tap.feeder
        if feeder is not None and not feeder.checked:
            feeder = self._check_pair(tap, args)
        own = tap.active and module.training
        fed = feeder is not None and feeder.active and args and self.modules[feeder.position].training
        if not (own or fed):
            return
        h = self._output_tensor(output)
        if h is None:
            return
        e = self._seen_entry(h)
        if fed:
            self._measure_fed(feeder, args[0], h, e)
        if own:
            if tap.is_bn and tap.from_bn:
                self._derive_output(tap, h, e)
            self._measure(tap, h, e)

    @eager
    def _on_plain_output(self, tap: Tap, module: nn.Module, args, output) -> None:
        """``_on_output`` for a point measured on its own output alone (most points): the
        same steps, without the BatchNorm cases."""
        if not (module.training and torch.is_grad_enabled()):
            return
        h = output if type(output) is torch.Tensor else self._output_tensor(output)
        if h is None or not h.is_floating_point() or h.is_sparse:
            return
        e = self._seen_entry(h)
        if e.derived is not None:  # a BatchNorm's output (a branch_out after it): its statistics are shared
            self._reduce_output(tap, e, h)
        else:
            if tap.reductions:
                self.reducer.output(e, h, tap.reductions, tap.channel_first)
            n = self.act_sample
            self.numel[tap.position] = h.numel() // h.shape[0] * n if n and h.dim() > 1 and h.shape[0] > n else \
                h.numel()  # fmt: skip
        if tap.grad_col >= 0 and h.requires_grad:
            self._want_grad(tap, e, h)

    @eager
    def _note_fed(self, tap: Tap, module: nn.Module, args, output) -> None:
        """An unchecked fed point's output, for its BatchNorm's hook to compare with its input."""
        if tap.checked:  # a later micro-batch of the step that checked it
            return
        h = self._output_tensor(output) if module.training and torch.is_grad_enabled() else None
        if h is not None:
            self.fed_out[tap.position] = h

    def _check_pair(self, q: Tap, args) -> Tap | None:
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
        self._measure(p, h)
        return None

    def _unpair(self, p: Tap) -> None:
        p.fed = False
        self.taps[p.position + 1].feeder = None
        self.rearm = True

    def _measure(self, tap: Tap, h: torch.Tensor, e: SeenOutput | None = None) -> None:
        e = e or self._seen_entry(h)
        self._reduce_output(tap, e, h)
        if tap.grad_col >= 0 and h.requires_grad:
            self._want_grad(tap, e, h)

    def _derive_output(self, tap: Tap, y: torch.Tensor, e: SeenOutput) -> None:
        """BatchNorm output y's sum and norm from its batch statistics (gradlab.recorder.bn_stats),
        for every point that sees y; its other reductions are taken on its sample."""
        if e.derived is None and SUM not in e.values and NORM not in e.values and e.sample is None:
            n = self._sample_size(y)
            if self.bn_stats.add_output(tap.position, y, n / y.shape[0] if n else 1.0, self._saved_of(y, e)):
                e.derived = tap.position

    def _saved_of(self, y: torch.Tensor, e: SeenOutput):
        """The batch statistics BatchNorm output y's backward node saved (read once per y)."""
        if e.saved is None:
            e.saved = (saved_stats(y, y.shape[1]) if y.dim() >= 2 else None) or False
        return e.saved or None

    def _reduce_output(self, tap: Tap, e: SeenOutput, h: torch.Tensor) -> None:
        todo = tap.reductions
        if e.derived is not None:
            self.bn_stats.share(e.derived, *tap.bn_cols)
            todo = tap.on_tensor
        if todo:
            self.reducer.output(e, h, todo, tap.channel_first)
        self.numel[tap.position] = self._sample_numel(h)

    def _want_grad(self, tap: Tap, e: SeenOutput, h: torch.Tensor) -> None:
        """Column tap.grad_col gets ||dL/dh||, from h's gradient hook (one per tensor)."""
        if e.grad_cols is None:
            e.grad_cols = [tap.grad_col]
            if self.reducer.retain(h, e.grad_cols, tap.grad_col):
                return
            node = h.grad_fn  # a pre-hook on the node that made h sees dL/dh, as a hook on h would, for less
            if node is not None:
                node.register_prehook(self._hook(partial(self._on_grad_outputs, e.grad_cols, h.output_nr)))
            else:
                h.register_hook(self._hook(partial(self._on_grad, e.grad_cols)))
        elif tap.grad_col not in e.grad_cols:
            e.grad_cols.append(tap.grad_col)

    def _measure_fed(self, p: Tap, x, y: torch.Tensor, ey: SeenOutput) -> None:
        """Point p's output x went only into this BatchNorm, whose output is y
        (``ProbePoint.bn_next``): x's sum and norm come from the batch statistics the
        BatchNorm saved (gradlab.recorder.bn_stats), dL/dx from the BatchNorm's backward node,
        which also serves dL/dy. Whatever cannot be had that way is measured on x itself."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.is_sparse:
            return
        e = self._seen_entry(x)
        if p.from_bn:  # (a fed point needs nothing else)
            sums, norms = ([c] if c >= 0 else [] for c in p.bn_cols)
            fresh = SUM not in e.values and NORM not in e.values and e.sample is None
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
        if self.reducer.derives_bn_grads and p.position + 1 in self.bn_stats.where:
            derive = (p.position + 1, self._saved_of(y, ey), self.bn_stats.gamma_beta())
        node.register_hook(self._hook(partial(self._on_bn_grad, ey.grad_cols, p.grad_col, derive)))

    @eager
    def _on_block_input(self, b: int, module: nn.Module, args) -> None:
        if not (module.training and torch.is_grad_enabled()) or not args:
            return
        x = args[0]
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return
        self.reducer.output(self._seen_entry(x), x, self.block_todo[b], True)

    # ------------------------------------------------------------------ gradient hooks

    @eager
    def _on_grad(self, cols: list[int], g: torch.Tensor) -> None:
        self._grad_norm(cols, g)

    @eager
    def _on_grad_outputs(self, cols: list[int], nr: int, grad_outputs) -> None:
        g = grad_outputs[nr]
        if g is not None:
            self._grad_norm(cols, g)

    def _grad_norm(self, cols: list[int], g: torch.Tensor) -> None:
        self.reducer.grad(g.detach() if g.requires_grad else g, cols)

    @eager
    def _on_bn_grad(self, cols: list[int], col_x: int, derive, grad_inputs, grad_outputs) -> None:
        """A BatchNorm's backward ran: ||dL/dy|| into ``cols``, ||dL/dx|| into ``col_x``,
        derived at step() if ``derive`` (key, saved statistics, gammas and betas) allows."""
        dy = grad_outputs[0] if grad_outputs else None
        if derive is not None and dy is not None:
            if self.bn_grads.add(derive[0], grad_inputs, dy, derive[1], derive[2], cols, col_x):
                return
        dx = grad_inputs[0] if grad_inputs else None
        for g, c in ((dy if cols else None, cols), (dx, [col_x])):
            if g is not None:
                self._grad_norm(c, g)
