"""Mixed reductions: small tensors kept for step() (gradlab.recorder.deferred), large ones
reduced in their hooks (gradlab.recorder.in_hook); the recorder's default on a CPU.

On a CPU a small tensor's reduction costs its dispatch, not its arithmetic: a transformer
of width 32 or a ResNet at batch 8 spends more on calling a sum and a norm per probe point
than on adding the numbers. Keeping such a tensor (a reference) and reducing all of them
at ``step()``, a stack per shape, costs a few calls a step. A large tensor is reduced in
its hook while it is still in cache, where stacking it would copy it first. Both halves do
the same arithmetic (gradlab.recorder.reductions), so the values are those of either.

A column stays with the half that took it first in a step: micro-batches of unequal sizes
(an epoch's last batch split in two) can fall on either side of ``small``, and only one half
can combine their gradient norms and let the last call's activation values win.
"""

from __future__ import annotations

import torch

from gradlab.recorder.deferred import DeferredReductions
from gradlab.recorder.in_hook import InHookReductions

__all__ = ["SMALL_NUMEL", "MixedReductions", "deferred_of", "in_hook_of", "reducer_for"]

SMALL_NUMEL = 1 << 14  # elements (of an output's sample, or a gradient) kept for step()


class MixedReductions:
    """Tensors of at most ``small`` elements deferred, larger ones reduced in the hooks."""

    derives_bn_grads = True
    name = "mixed"

    def __init__(self, deferred: DeferredReductions, in_hook: InHookReductions, sample_numel,
                 small: int = SMALL_NUMEL):  # fmt: skip
        self.deferred = deferred
        self.in_hook = in_hook
        self.sample_numel = sample_numel  # h -> the elements of its sample (gradlab.recorder.taps.Sample)
        self.small = small
        self.took: dict[int, object] = {}  # a point's first column -> the half reducing it this step

    def _half(self, col: int, small: bool):
        half = self.took.get(col)
        if half is None:  # (a lean hook's entry is the deferred half's: gradlab.recorder.fast_step)
            half = self.took[col] = self.deferred if small or self.deferred.fast.holds(col) else self.in_hook
        return half

    def output(self, seen, h: torch.Tensor, todo, channel_first: bool) -> None:
        self._half(todo[0][1], self.sample_numel(h) <= self.small).output(seen, h, todo, channel_first)

    def grad(self, g: torch.Tensor, cols: list[int]) -> None:
        self._half(cols[0], g.numel() <= self.small).grad(g, cols)

    def retain(self, h: torch.Tensor, cols: list[int], key: int) -> bool:
        if self.took.get(cols[0], self.deferred) is not self.deferred or not self.deferred.retain(h, cols, key):
            return False
        self.took[cols[0]] = self.deferred
        return True

    def finish(self) -> None:
        self.deferred.finish()

    def write(self, row: torch.Tensor) -> list[int]:
        return self.deferred.write(row) + self.in_hook.write(row)

    def clear(self) -> None:
        self.deferred.clear()
        self.in_hook.clear()
        self.took.clear()


def reducer_for(where: str, device: torch.device, vals: list, sample, scratch):
    """The strategy for ``where`` ("hooks", "step" or "mixed"): ``vals`` the step's values,
    ``sample`` its Sample (gradlab.recorder.taps), ``scratch`` a FlatScratch."""
    in_hook = InHookReductions(vals, sample.view, scratch, fused=device.type == "cpu")
    if where == "hooks":
        return in_hook
    deferred = DeferredReductions(device, vals, sample.size)
    return deferred if where == "step" else MixedReductions(deferred, in_hook, sample.numel)


def in_hook_of(reducer) -> InHookReductions | None:
    """The strategy's in-hook half: the reducer itself ("hooks"), a mixed one's, or None ("step")."""
    return reducer if isinstance(reducer, InHookReductions) else getattr(reducer, "in_hook", None)


def deferred_of(reducer) -> DeferredReductions | None:
    """The strategy's deferred half: the reducer itself ("step"), a mixed one's, or None ("hooks")."""
    return reducer if isinstance(reducer, DeferredReductions) else getattr(reducer, "deferred", None)
