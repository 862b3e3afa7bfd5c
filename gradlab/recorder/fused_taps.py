"""Lean forward hooks for the probe points the fused CPU kernels measure in their hooks.

On a CPU a short step (ResNet-20 at batch 8) pays the recorder's forward hooks more in
Python than in arithmetic, and more than their Python would cost warm: each hook runs
right after a convolution has evicted its code and data from the caches. The general hook
(gradlab.recorder.hooks) asks at every call what FastTaps (gradlab.recorder.fast_taps)
asks of small outputs: where the output goes, whether another point sees it, which path
reduces it. For three kinds of point the answers are the same at every step, and the
first recorded step learns them (:meth:`FusedTaps.learn`):

* a BatchNorm and the point before it (a conv whose output goes only to it,
  ``ProbePoint.bn_next``), both derived from the batch statistics the BatchNorm saved
  (gradlab.recorder.bn_stats): the lean hook queues the two derivations, reads the
  output once with the fused kernel for what the statistics cannot give (its positive
  count), and hooks the BatchNorm's backward node for both gradient norms (bn_grads);
* a large output of its own (a residual block's): one kernel call for its sum, norm and
  count, and a pre-hook on its autograd node for ||dL/dh||;
* a point or a block input that sees the very tensor one of those produced (a
  ``branch_out`` after its BatchNorm, the next block's input): it takes the values its
  source took, a few assignments, instead of asking again.

Each lean hook guards what its plan assumes (the output's type, shape, dtype and layout,
training mode, grad mode, the BatchNorm's backward node; for a shared tensor, that it is
the one its source just saw, unchanged in place since) and hands any other call to the
general hook, which records it as before. A point no plan foresaw that meets a tensor a
lean hook took finds, through ``SeenOutputs.taken``, what was taken of it, and shares it as
it would have with the general hook. The values are the general hook's: the same kernel,
the same derivations, the same gradient hooks. Only on a CPU, where the fused kernels are
on, and without ``cpu_threads``.
"""

from __future__ import annotations

import weakref
from functools import partial

import torch

from gradlab.recorder import native
from gradlab.recorder.compiled import eager
from gradlab.recorder.fused_tensors import qualifies
from gradlab.recorder.in_hook import FUSED_VALUES
from gradlab.recorder.mixed import in_hook_of
from gradlab.recorder.reductions import F32
from gradlab.recorder.taps import Tap

__all__ = ["FusedTaps"]

_TENSOR = torch.Tensor


def _nothing():
    return None


class _Source:
    """A planned point's output of this forward, for the points and blocks that see it."""

    __slots__ = ("last", "version", "numel", "out", "grad_cols", "host_cols", "key", "taken")

    def __init__(self, host_cols: dict, key, taken: dict):
        self.host_cols = host_cols  # reduction -> the column holding its value on the host
        self.key = key  # a BatchNorm's key in BNStats (None: not a BatchNorm)
        self.taken = taken  # id(output) -> its source, this step (shared by all sources)
        self.clear()

    def clear(self) -> None:
        self.last = _nothing  # the output the lean hook took last, weakly (a dead ref: none this step)
        self.version = -1  # ... and its version then (changed in place since: not the values taken)
        self.numel = 0
        self.out = None  # a BatchNorm's queued output (its sum and norm columns grow)
        self.grad_cols: list[int] | None = None  # the columns its gradient hook fills

    def took(self, output: torch.Tensor, numel: int, grad_col: int) -> list[int]:
        """The lean hook took ``output`` (``numel`` elements measured): the points and blocks
        after it may share it; returns the gradient columns, which they may extend."""
        self.last, self.version, self.numel = weakref.ref(output), output._version, numel
        self.grad_cols = [grad_col]
        self.taken[id(output)] = self
        return self.grad_cols

    def describe(self, h: torch.Tensor, e) -> None:
        """Fill SeenOutput ``e`` of h, which this source took unchanged, as the general hook
        would have: a point the plan did not foresee then shares its values."""
        e.values.update(self.host_cols)  # (a host column, as InHookReductions caches it)
        e.derived = self.key
        e.grad_cols = self.grad_cols


class _Observed:
    """What the general hooks did with a point's or a block input's tensor on the learning step."""

    __slots__ = ("tap", "tensor", "entry", "x", "order")

    def __init__(self, tap, tensor, entry, x, order):
        self.tap, self.tensor, self.entry, self.x, self.order = tap, tensor, entry, x, order


class FusedTaps:
    """Learns on the first recorded step which points take a lean hook, and makes the hooks.

    ``hooks``: the StepHooks whose general hooks, BatchNorm statistics, in-hook reducer
    (its host values) and gradient hooks the lean hooks share. Nothing is learned unless
    the fused kernels measure in the hooks there (a CPU, kernels on, no thread limit)."""

    def __init__(self, hooks):
        self.h = hooks
        self.ih = in_hook_of(hooks.reducer)  # (the reducer of the large outputs, if any)
        self.learning = (not hooks.thread_limit and self.ih is not None and self.ih.fused
                         and native.library() is not None)  # fmt: skip
        self._points: dict[int, _Observed] = {}  # tap position -> what the learning step saw
        self._blocks: dict[int, _Observed] = {}  # block -> its input, on the learning step
        self.plans: dict[int, tuple] = {}  # tap position -> (kind, its _Source or its source)
        self.block_sources: dict[int, _Source] = {}  # block -> the source of its input
        self._sources: list[_Source] = []
        self._order = 0  # observations so far on the learning step
        self._taken: dict[int, _Source] = {}  # id(output) -> the source that took it, this step

    # ------------------------------------------------------------------ learning

    def observe(self, tap: Tap, h: torch.Tensor, entry, x: torch.Tensor | None = None) -> None:
        """The general hook measured ``tap`` on output ``h`` (``x``: a BatchNorm's input)."""
        self._order += 1
        self._points[tap.position] = _Observed(tap, h, entry, x, self._order)

    def observe_block(self, b: int, x: torch.Tensor, entry) -> None:
        self._order += 1
        self._blocks[b] = _Observed(None, x, entry, None, self._order)

    def after_step(self) -> bool:
        """At the learning step's end (after the reducers' ``finish()``): make the plans.
        True when a hook changes."""
        if not self.learning or not (self._points or self._blocks):
            return False
        self.learning = False
        try:
            return self._learn()
        finally:
            self._points.clear()
            self._blocks.clear()

    def _learn(self) -> bool:
        h = self.h
        sources: dict[int, tuple] = {}  # id(output) -> (order, _Source, the source's tap)
        for o in sorted(self._points.values(), key=lambda o: o.order):
            tap, y = o.tap, o.tensor
            if id(y) in sources or not self._usable(y):
                continue
            kind = self._kind(o)
            if kind is None:
                continue
            cols = {red: col for red, col in tap.reductions if red in FUSED_VALUES and not (kind == "bn" and red.from_batchnorm)}
            src = _Source(cols, tap.position if kind == "bn" else None, self._taken)
            self.plans[tap.position] = (kind, src)
            sources[id(y)] = (o.order, src, tap, o.entry)
        shared: dict[int, int] = {}  # id(output) -> the points and blocks planned to take it from its source
        for o in self._points.values():
            hit = sources.get(id(o.tensor))
            if hit is None or o.tap.position in self.plans or o.order < hit[0] or not self._aliasable(o.tap, hit):
                continue
            self.plans[o.tap.position] = ("alias", hit[1])
            shared[id(o.tensor)] = shared.get(id(o.tensor), 0) + 1
        for b, o in self._blocks.items():
            hit = sources.get(id(o.tensor))
            todo = h.block_todo[b] if b < len(h.block_todo) else ()
            if hit is not None and o.order > hit[0] and self._covers(hit, [red for red, _ in todo], derived=False):
                self.block_sources[b] = hit[1]
                shared[id(o.tensor)] = shared.get(id(o.tensor), 0) + 1
        for key, (_, src, tap, entry) in list(sources.items()):  # a tensor another point took its own way
            if entry.uses != 1 + shared.get(key, 0):
                self._drop(tap.position, src)
        self._sources = [p[1] for p in self.plans.values() if p[0] != "alias"]
        if self._sources:
            self.h.seen.taken = self._describe
        return bool(self.plans)

    def _describe(self, h: torch.Tensor, e) -> None:
        src = self._taken.get(id(h))
        if src is not None and src.last() is h and src.version == h._version:
            src.describe(h, e)

    def _drop(self, position: int, src: _Source) -> None:
        self.plans.pop(position, None)
        for p in [k for k, (kind, s) in self.plans.items() if kind == "alias" and s is src]:
            del self.plans[p]
        for b in [k for k, s in self.block_sources.items() if s is src]:
            del self.block_sources[b]

    @staticmethod
    def _usable(t: torch.Tensor) -> bool:
        return type(t) is _TENSOR and qualifies(t) and t.requires_grad

    def _kind(self, o: _Observed) -> str | None:
        """"bn" (a BatchNorm pair, both derived), "large" (an output the kernel reduced in
        its hook), or None (the general hook keeps it)."""
        h, tap, y, e = self.h, o.tap, o.tensor, o.entry
        if not tap.active or y.grad_fn is None:  # (a point found repeated in a forward is inactive)
            return None
        if tap.is_bn:
            p = tap.feeder
            node = y.grad_fn
            bs = h.bn_stats
            ok = (p is not None and p.checked and p.fed and p.active and e.derived == tap.position and o.x is not None
                  and self._usable(o.x) and o.x.grad_fn is not None and p.grad_col >= 0 and tap.grad_col >= 0
                  and h.reducer.derives_bn_grads and bs.derives(tap.position, type(node).__name__, y.shape[1])
                  and (tap.on_tensor == () or self._large(y)))  # fmt: skip
            return "bn" if ok and all(red in FUSED_VALUES for red, _ in tap.on_tensor) else None
        if tap.plain and tap.fast is None and tap.reductions and tap.grad_col >= 0 and self._large(y):
            return "large" if all(red in FUSED_VALUES for red, _ in tap.reductions) else None
        return None

    def _large(self, y: torch.Tensor) -> bool:
        """Reduced in its hook by the fused kernel (not kept for step(): gradlab.recorder.mixed)."""
        small = getattr(self.h.reducer, "small", None)
        return small is None or self.h.sample.numel(y) > small

    def _aliasable(self, q: Tap, hit) -> bool:
        if not (q.plain and q.active and q.fast is None):
            return False
        return self._covers(hit, [red for red, _ in q.reductions], derived=True)

    @staticmethod
    def _covers(hit, reductions, derived: bool) -> bool:
        """Whether the source gives each of ``reductions``: in a host column, or (``derived``)
        derived from a BatchNorm's statistics, as the general hook shares them. (A block input
        the general hook reduces itself, so a derived value is not taken for it.)"""
        _, src, tap, _ = hit
        derived = derived and tap.is_bn
        return all((derived and red.from_batchnorm) or red in src.host_cols for red in reductions)

    # ------------------------------------------------------------------ the hooks

    def clear(self) -> None:
        """A step's end: forget its outputs (no tensor is held past the step), and what a
        learning step that ends unrecorded saw (it learns on the next)."""
        for src in self._sources:
            src.clear()
        self._taken.clear()
        self._points.clear()
        self._blocks.clear()
        self._order = 0

    def hook(self, tap: Tap, general):
        """The lean forward hook of planned point ``tap`` (``general``: its general hook)."""
        kind, src = self.plans[tap.position]
        if kind == "alias":
            return self._alias_hook(tap, src, general)
        return (self._bn_hook if kind == "bn" else self._large_hook)(tap, src, general)

    def block_hook(self, b: int, general):
        """The lean pre-hook of block ``b``, whose input is a planned point's output."""
        src, h, grad_enabled = self.block_sources[b], self.h, torch.is_grad_enabled
        ((red, col),) = h.block_todo[b]
        host, host_cols, at = self.ih.host, self.ih.host_cols, src.host_cols[red]

        @eager
        def lean(module, args):
            if (not args or args[0] is not src.last() or args[0]._version != src.version or not module.training
                    or not grad_enabled()):  # fmt: skip
                return general(module, args)
            host[col] = host[at]
            host_cols.append(col)

        return lean

    def _large_hook(self, tap: Tap, src: _Source, general):
        h = self.h
        ih, numel, grad_enabled = self.ih, h.numel, torch.is_grad_enabled
        take = ih.kernel_into_host
        shape, n, position, grad_col = None, 0, tap.position, tap.grad_col
        cols = [(col, FUSED_VALUES[red]) for red, col in tap.reductions]

        @eager
        def on_grad(cols: list[int], nr: int, grad_outputs) -> None:  # (StepHooks._on_grad_outputs, leaner)
            g = grad_outputs[nr]
            if g is not None:
                ih.grad(g.detach() if g.requires_grad else g, cols)

        @eager
        def lean(module, args, output):
            nonlocal shape, n
            if (type(output) is not _TENSOR or output.dtype is not F32 or not output.is_contiguous() or not output.is_cpu
                    or not module.training or not grad_enabled() or not output.requires_grad or output.grad_fn is None):  # fmt: skip
                return general(module, args, output)
            if output.shape != shape:  # (the first call, or a new batch: is it still reduced in its hook?)
                if not self._large(output):
                    return general(module, args, output)
                shape, n = output.shape, h.sample.numel(output)
            take(output, n, cols)
            numel[position] = n
            output.grad_fn.register_prehook(partial(on_grad, src.took(output, n, grad_col), output.output_nr))

        return lean

    def _bn_hook(self, tap: Tap, src: _Source, general):
        h = self.h
        p, bs, ih = tap.feeder, h.bn_stats, self.ih
        inputs, outputs = bs.queues()
        numel, grad_enabled, take = h.numel, torch.is_grad_enabled, ih.kernel_into_host
        key, p_position, position = tap.position, p.position, tap.position
        in_sums, in_norms = ([c] if c >= 0 else [] for c in p.bn_cols)
        in_key = (tuple(in_sums), tuple(in_norms))
        out_sum, out_norm = tap.bn_cols
        cols = [(col, FUSED_VALUES[red]) for red, col in tap.on_tensor]
        shape, node_type, channels, n, scale, eps_attr, dims, keeps = None, None, 0, 0, 1.0, "", (), False
        grad_col, col_x, bg = tap.grad_col, p.grad_col, h.bn_grads
        conv = h.modules[p.position]  # (the general hook measures it only in training mode)
        general_grad, keep, derived_grads = h._on_bn_grad, bg.keep, bg.derives(key)

        @eager
        def on_grad(cols: list[int], invstd, eps, dims: tuple, gamma_beta, grad_inputs, grad_outputs) -> None:
            """StepHooks._on_bn_grad for a BatchNorm whose formula held: dL/dy kept for write()."""
            dy = grad_outputs[0] if grad_outputs else None
            if (dy is None or len(grad_inputs) < 3 or grad_enabled() or type(dy) is not _TENSOR or not dy.is_contiguous()
                    or grad_inputs[0] is None or grad_inputs[1] is None or grad_inputs[2] is None
                    or not keep(key, dy, grad_inputs[1], grad_inputs[2], invstd, eps, dims, cols, col_x, gamma_beta)):  # fmt: skip
                general_grad(cols, col_x, (key, (node_type.__name__, None, invstd, eps), gamma_beta), grad_inputs, grad_outputs)

        @eager
        def lean(module, args, y):
            nonlocal shape, node_type, channels, n, scale, eps_attr, dims, keeps
            node = y.grad_fn if type(y) is _TENSOR else None  # (None without grad)
            if (node is None or y.dtype is not F32 or not y.is_contiguous() or not y.is_cpu or not module.training
                    or not conv.training):  # fmt: skip
                return general(module, args, y)
            if y.shape != shape or type(node) is not node_type:  # (the first call, or a new batch)
                attr = bs.derives(key, type(node).__name__, y.shape[1]) if y.dim() >= 2 else ""
                if not attr or cols and not self._large(y):  # (its count: reduced in its hook still?)
                    return general(module, args, y)
                shape, node_type, channels, eps_attr = y.shape, type(node), y.shape[1], attr
                sample = h.sample.size(y)
                n, scale = h.sample.numel(y), sample / y.shape[0] if sample else 1.0
                total = y.numel()
                dims = (channels, total / channels, total // (y.shape[0] * channels))
                keeps = derived_grads and total <= bg.keep_numel
            mean, invstd, eps = node._saved_result1, node._saved_result2, float(getattr(node, eps_attr))
            total = y.numel()
            inputs[in_key] = (mean, invstd, channels, eps, total / channels, in_sums, in_norms)
            numel[p_position] = total
            src.out = (key, invstd, channels, eps, total / channels * scale,
                       [out_sum] if out_sum >= 0 else [], [out_norm] if out_norm >= 0 else [])  # fmt: skip
            outputs[key] = src.out
            if cols:
                take(y, n, cols)
            numel[position] = n
            grad_cols = src.took(y, n, grad_col)
            if keeps:
                node.register_hook(partial(on_grad, grad_cols, invstd, eps, dims, bs.gamma_beta()))
            else:
                node.register_hook(partial(general_grad, grad_cols, col_x, (key, (node_type.__name__, mean, invstd, eps),
                                                                        bs.gamma_beta())))  # fmt: skip

        return lean

    def _alias_hook(self, tap: Tap, src: _Source, general):
        h = self.h
        bs, numel = h.bn_stats, h.numel
        host, host_cols = self.ih.host, self.ih.host_cols
        position, grad_col = tap.position, tap.grad_col
        sum_col, norm_col = tap.bn_cols
        copies = [(col, src.host_cols[red]) for red, col in tap.reductions if red in src.host_cols]
        derived = any(red.from_batchnorm and red not in src.host_cols for red, _ in tap.reductions)

        grad_enabled = torch.is_grad_enabled

        @eager
        def lean(module, args, output):
            if output is not src.last() or output._version != src.version or not module.training or not grad_enabled():
                return general(module, args, output)
            if derived:
                bs.share_into(src.out, sum_col, norm_col)
            for col, at in copies:
                host[col] = host[at]
                host_cols.append(col)
            numel[position] = src.numel
            if grad_col >= 0 and grad_col not in src.grad_cols:
                src.grad_cols.append(grad_col)

        return lean
