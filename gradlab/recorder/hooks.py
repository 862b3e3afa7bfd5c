"""The hooks of a recorded step and the scratch state they share until ``step()``.

Forward hooks on the probe points' modules (each module's forward wrapped to call them:
gradlab.recorder.forward_wrap) hand each output to the reduction strategy
(gradlab.recorder.in_hook reduces it at once, gradlab.recorder.deferred keeps a sample for
``step()``, gradlab.recorder.mixed chooses by size), dL/dh is handed over by a hook or
kept with ``retain_grad`` (gradlab.recorder.kept_grads), and forward pre-hooks on residual blocks take
||x||. What each point needs is its columns' (gradlab.recorder.layout); ``write()`` then
fills the step's row. A conv whose output goes only to a BatchNorm is measured by that
BatchNorm's hooks from its saved batch statistics (gradlab.recorder.bn_stats, bn_grads);
on the first recorded step a checking hook confirms the pairing, and a pair the forward
routes otherwise is dissolved for good. Why it is built this way, and what it costs:
docs/recorder.md.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
import torch.nn as nn

from gradlab.recorder.bn_grads import BNGrads
from gradlab.recorder.bn_stats import BNStats, bn_node, saved_stats
from gradlab.recorder.compiled import eager, eager_while_armed
from gradlab.recorder.fast_taps import FastTaps
from gradlab.recorder.forward_wrap import attach
from gradlab.recorder.fused_taps import FusedTaps
from gradlab.recorder.layout import Layout
from gradlab.recorder.mixed import reducer_for
from gradlab.recorder.reductions import F32
from gradlab.recorder.repeated_calls import RepeatedCalls
from gradlab.recorder.statistics import INPUT_NORM, NORM, SUM
from gradlab.recorder.targets import Targets
from gradlab.recorder.taps import FlatScratch, Sample, SeenOutput, SeenOutputs, Tap, output_tensor, taps_of, with_threads

__all__ = ["StepHooks"]


class StepHooks:
    """Attaches the measuring hooks for a recorded step and holds what they measured.

    act_sample: activation statistics use the first ``act_sample`` examples of a batch
    (None: all); cpu_threads: intra-op threads of the hooks on a CPU (None: PyTorch's
    setting); defer: where reductions run, "hooks", "step" or "mixed" (gradlab.recorder.mixed).
    """

    def __init__(self, targets: Targets, layout: Layout, device: torch.device, act_sample: int | None,
                 cpu_threads: int | None, defer: str):  # fmt: skip
        self.modules = targets.modules
        self.blocks = targets.blocks
        self.taps = taps_of(layout.points)
        self.block_todo = [((NORM, c),) for c in layout.blocks.get(INPUT_NORM, [])]  # ||x|| of each block's input
        self.act_sample = act_sample
        self.thread_limit = cpu_threads if cpu_threads and device.type == "cpu" else None
        self.bn_stats = BNStats(device, {t.position: self.modules[t.position] for t in self.taps if t.is_bn})
        self.bn_grads = BNGrads(device, self.bn_stats.where)
        self.unset = torch.full((), math.nan, dtype=F32, device=device)  # "not measured"
        self.template = [self.unset] * layout.width
        self.base = layout.param_width  # the first column a hook fills
        self.vals: list[torch.Tensor] = list(self.template)  # this step's value of every column
        self.sample = Sample(act_sample)
        self.reducer = reducer_for(defer, device, self.vals, self.sample, FlatScratch())
        self.fast = FastTaps.of(self.reducer, self.sample, lean=not self.thread_limit)
        self.fused = FusedTaps(self)  # (lean hooks where the fused kernels measure in the hooks)
        self.repeats = RepeatedCalls(self.taps, [p.name for p in targets.points])  # a module run twice in a forward
        self.no_numel = [0] * len(self.taps)
        self.numel = list(self.no_numel)  # elements each point's sums and norms cover
        self.seen = SeenOutputs()  # id(tensor) -> what was taken of it, this forward
        self.fed_out: dict[int, torch.Tensor] = {}  # unchecked fed points' outputs, this forward
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
            hooks: list[tuple] = []  # (module, a pre-hook or None, a hook or None)
            for tap, module in zip(self.taps, self.modules):
                if tap.hooked:
                    on_output = hook(partial(self._on_plain_output if tap.plain else self._on_output, tap))
                    if tap.fast is not None and tap.plain:  # the lean hook (gradlab.recorder.fast_taps)
                        on_output = self.fast.hook(tap, on_output, self.numel)
                    elif tap.position in self.fused.plans:  # (gradlab.recorder.fused_taps)
                        on_output = self.fused.hook(tap, on_output)
                    hooks.append((module, None, on_output))
                elif tap.fed and tap.active and not tap.checked:
                    hooks.append((module, None, hook(partial(self._note_fed, tap))))
            for b, block in enumerate(self.blocks if self.block_todo else ()):
                pre = hook(partial(self._on_block_input, b))
                hooks.append((block.module, self.fused.block_hook(b, pre) if b in self.fused.block_sources else pre, None))
            self.handles.extend(attach(hooks))
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
        repeated = self.repeats.counting and self.repeats.judge()  # the first recorded step: points run twice?
        learned = [self.fast.after_step(), self.fused.after_step()]  # (both learn on the first recorded step)
        self.rearm = any(learned) or repeated or self.rearm  # (hooks change: re-attach them)
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
        if self.repeats.masked:  # never a mix of two calls' values
            written[self.repeats.masked] = False

    def clear(self) -> None:
        """Forget this step's values (after it was recorded, or when its forward ran unarmed)."""
        for j in self.fed_out:  # a fed point's output that its BatchNorm never took
            self._unpair(self.taps[j])
        self.fed_out.clear()
        self.numel[:] = self.no_numel  # (in place: the lean hooks hold the list)
        self.seen.clear()
        self.vals[:] = self.template
        self.bn_stats.clear()
        self.bn_grads.clear()
        self.reducer.clear()
        self.fused.clear()

    # ------------------------------------------------------------------ forward hooks

    @eager
    def _on_output(self, tap: Tap, module: nn.Module, args, output) -> None:
        if not torch.is_grad_enabled():
            return
        feeder = tap.feeder
        if feeder is not None and not feeder.checked:
            feeder = self._check_pair(tap, args)
        own = tap.active and module.training
        if own and self.repeats.counting:
            self.repeats.calls[tap.position] += 1
        fed = feeder is not None and feeder.active and args and self.modules[feeder.position].training
        if not (own or fed):
            return
        h = output_tensor(output)
        if h is None:
            return
        e = self.seen.entry(h)
        if fed:
            self._measure_fed(feeder, args[0], h, e)
        if own:
            if tap.is_bn and tap.from_bn:
                self._derive_output(tap, h, e)
            self._measure(tap, h, e)
            if self.fused.learning:
                self.fused.observe(tap, h, e, args[0] if fed else None)

    @eager
    def _on_plain_output(self, tap: Tap, module: nn.Module, args, output) -> None:
        """``_on_output`` for a point measured on its own output alone (most points): the
        same steps, without the BatchNorm cases."""
        if not (module.training and torch.is_grad_enabled()):
            return
        h = output_tensor(output)
        if h is not None:
            if self.repeats.counting:
                self.repeats.calls[tap.position] += 1
            e = self.seen.entry(h)
            self._measure(tap, h, e)  # (a BatchNorm output it sees shares its statistics)
            if self.fast.learning:
                self.fast.observe(tap, h, e)
            if self.fused.learning:
                self.fused.observe(tap, h, e)

    @eager
    def _note_fed(self, tap: Tap, module: nn.Module, args, output) -> None:
        """An unchecked fed point's output, for its BatchNorm's hook to compare with its input."""
        if tap.checked:  # a later micro-batch of the step that checked it
            return
        h = output_tensor(output) if module.training and torch.is_grad_enabled() else None
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
        e = e or self.seen.entry(h)
        self._reduce_output(tap, e, h)
        if tap.grad_col >= 0 and h.requires_grad:
            self._want_grad(tap, e, h)

    def _derive_output(self, tap: Tap, y: torch.Tensor, e: SeenOutput) -> None:
        """BatchNorm output y's sum and norm from its batch statistics (gradlab.recorder.bn_stats),
        for every point that sees y; its other reductions are taken on its sample."""
        if e.derived is None and SUM not in e.values and NORM not in e.values and e.sample is None:
            n = self.sample.size(y)
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
        self.numel[tap.position] = self.sample.numel(h)

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
        e = self.seen.entry(x)
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
        e = self.seen.entry(x)
        self.reducer.output(e, x, self.block_todo[b], True)
        if self.fused.learning:
            self.fused.observe_block(b, x, e)

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
