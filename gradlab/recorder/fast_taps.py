"""A lean forward hook for the probe points whose outputs are small and their own.

On a CPU a short step (a transformer of width 32, a ResNet at batch 8) pays the recorder
per probe point, in Python, more than in arithmetic: the general hook
(gradlab.recorder.hooks) asks of every output where it goes, whether another point sees
it, whether it is kept or copied, whether its gradient is retained or hooked. For most
points the answers are the same at every step. The first recorded step learns them
(:meth:`FastTaps.learn`); from the next one, a point whose output was small (deferred to
``step()``: gradlab.recorder.deferred), seen by no other point or block, not changed in
place by a later op, and whose gradient could be retained, gets a hook that does just
that: keep a reference, retain the gradient, note the elements. Any other call (another
shape or dtype, eval mode, no grad, a tensor subclass, a memory bound reached) takes the
general hook, which records it as before; an output found changed in place at ``step()``
sends its point back to the general hook for good. The values are those of the general
hook: the same reductions run on the same tensors at ``step()``.
"""

from __future__ import annotations

import torch

from gradlab.recorder.compiled import eager
from gradlab.recorder.mixed import deferred_of
from gradlab.recorder.taps import Tap

__all__ = ["FastPlan", "FastTaps"]

_TENSOR = torch.Tensor


class FastPlan:
    """What the general hook did with a point's output, to be done again without asking."""

    __slots__ = ("shape", "dtype", "first", "meta", "key", "todo", "size", "numel", "grad_cols", "grad_key")

    def __init__(self, tap: Tap, h: torch.Tensor, first: int | None, numel: int, grad: bool):
        self.shape, self.dtype, self.first = h.shape, h.dtype, first
        self.meta = (h.shape if first is None else (first, *h.shape[1:]), h.dtype, tap.channel_first)
        self.key = tap.reductions[0][1] if tap.reductions else -1  # the deferred path's key: its first column
        self.todo = tap.reductions
        self.size = h.numel() * h.element_size()
        self.numel = numel
        self.grad_cols = [tap.grad_col] if grad else None
        self.grad_key = tap.grad_col


class FastTaps:
    """Learns on the first recorded step which points can take the lean hook, and makes it.

    ``deferred``: the DeferredReductions of the step (None: reductions run in the hooks,
    and nothing here applies); ``small``: the most elements an output may have to be
    deferred (gradlab.recorder.mixed; None: any); ``sample``: the recorder's Sample;
    ``took``: the mixed reducer's columns taken this step, by half (None: not mixed)."""

    def __init__(self, deferred, small: int | None, sample, took: dict | None = None):
        self.deferred = deferred
        self.small = small
        self.took = took
        self.sample = sample
        self.learning = deferred is not None  # the next recorded step is watched to learn
        self.seen: dict[int, tuple] = {}  # tap position -> (tap, output, its SeenOutput), the learning step
        self.fast: dict[int, Tap] = {}  # tap position -> the tap, for those with a plan
        self._known = (0, 0)  # how many outputs the deferred path knew to be changed in place, at the last check

    @classmethod
    def of(cls, reducer, sample, lean: bool = True) -> FastTaps:
        """The lean hooks of a reducer's deferred half (none to learn without one, or without ``lean``)."""
        deferred = deferred_of(reducer) if lean else None
        return cls(deferred, getattr(reducer, "small", None), sample, getattr(reducer, "took", None))

    def observe(self, tap: Tap, h: torch.Tensor, entry) -> None:
        """The general hook measured ``tap`` on ``h`` (during the learning step)."""
        self.seen[tap.position] = (tap, h, entry)

    def after_step(self) -> bool:
        """At a recorded step's end (after ``finish()``): learn on the first, revoke the plans of
        outputs found changed in place on the others. True when a point's hook changes."""
        if self.learning and self.seen:
            return self.learn()
        return bool(self.fast) and self.revoke_changed()

    def learn(self) -> bool:
        """After the learning step's ``finish()``: give a plan to each point that qualifies.
        True if any did."""
        self.learning = False
        d = self.deferred
        for tap, h, e in self.seen.values():
            plan = self._plan(tap, h, e.uses, d)
            if plan is not None:
                tap.fast = plan
                self.fast[tap.position] = tap
        self.seen.clear()
        return bool(self.fast)

    def _plan(self, tap: Tap, h: torch.Tensor, uses: int, d) -> FastPlan | None:
        if uses != 1 or not tap.active or type(h) is not _TENSOR or h.grad_fn is None or not h.requires_grad:
            return None
        if self.small is not None and h.numel() > self.small:  # (its sample and its gradient are no larger)
            return None
        grad = tap.grad_col >= 0
        if grad and h.numel() > d.grads.retain_numel:
            return None
        plan = FastPlan(tap, h, self.sample.size(h), self.sample.numel(h), grad)
        return None if self._changed_in_place(plan) else plan

    def _changed_in_place(self, plan: FastPlan) -> bool:
        """Whether the deferred path has seen a later op change this point's output in place."""
        d = self.deferred
        return plan.key in d._copied or (plan.grad_cols is not None and plan.grad_key in d.grads._in_place)

    def revoke_changed(self) -> bool:
        """Points whose output a later op was found to change in place lose their plan
        (the general hook copies such outputs); True if any did. (Only when the deferred
        path found a new one since the last check: the sets only grow.)"""
        known = (len(self.deferred._copied), len(self.deferred.grads._in_place))
        if known == self._known:
            return False
        self._known = known
        gone = [position for position, tap in self.fast.items() if self._changed_in_place(tap.fast)]
        for position in gone:
            self.fast.pop(position).fast = None
        return bool(gone)

    def hook(self, tap: Tap, general, numel: list):
        """The lean forward hook of ``tap`` (``general``: the general hook, for any call the
        plan does not describe; ``numel``: the step's elements per point)."""
        plan, d = tap.fast, self.deferred
        grads, grad_enabled, position, keep = d.grads, torch.is_grad_enabled, tap.position, d.fast.entries.append
        took, key, grad_key = self.took, plan.key, plan.grad_key
        shape, dtype, todo, size, grad_cols, n = plan.shape, plan.dtype, plan.todo, plan.size, plan.grad_cols, plan.numel
        kept = bool(todo) or grad_cols is not None

        @eager
        def fast(module, args, output):
            if (type(output) is not _TENSOR or output.shape != shape or output.dtype != dtype or not module.training
                    or not grad_enabled() or not output.requires_grad or d._kept + size > d.ref_bytes
                    or grad_cols is not None and grads._retained_bytes + size > grads.grad_bytes
                    or took and (took.get(key, d) is not d or took.get(grad_key, d) is not d)):  # fmt: skip
                # (the last: an earlier call of this step, another micro-batch, was reduced in the hooks)
                return general(module, args, output)
            if todo:
                d._kept += size
            if grad_cols is not None:
                output.retain_grad()
                grads._retained_bytes += size
            if kept:
                keep((plan, output, output._version))  # (reduced at step(): gradlab.recorder.fast_step)
            numel[position] = n

        return fast
