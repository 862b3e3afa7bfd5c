"""The learning-rate schedule of He et al. 2015 §4.2, in iterations.

lr is multiplied by `gamma` at each milestone (0.1: divided by 10). Networks of `warmup_min_depth` layers and
deeper start at `warmup_lr` until the running training error falls below
`warmup_exit_err` (about 400 iterations on CIFAR), then go back to `lr` — which the
common PyTorch port forgets to do. The warm-up is the paper's rule for its own nets:
``warmup=False`` leaves it out for the later remedies (Fixup and the others exist to train
deep nets without it; Fixup's zero-initialized start cannot even leave at the small rate).
"""

from __future__ import annotations

import bisect

from gradlab.config import Recipe


class PaperSchedule:
    """The paper's learning rate at each iteration (a torch StepLR steps by epochs and has no
    warm-up, hence a class of gradlab's own)."""

    def __init__(self, recipe: Recipe, depth: int, warmup: bool = True):
        self.recipe = recipe
        self.warms = warmup and depth >= recipe.warmup_min_depth and recipe.warmup_lr != recipe.lr
        self.warmup_exit_step: int | None = None if self.warms else 0

    @property
    def warming(self) -> bool:
        return self.warmup_exit_step is None

    def lr(self, step: int) -> float:
        if self.warming:
            return self.recipe.warmup_lr
        drops = bisect.bisect_right(self.recipe.milestones, step)
        return self.recipe.lr * self.recipe.gamma**drops

    def observe(self, step: int, train_err: float) -> None:
        """Feed the running training error measured up to `step`; ends warm-up when low enough."""
        if self.warming and train_err < self.recipe.warmup_exit_err:
            self.warmup_exit_step = step

    def state_dict(self) -> dict:
        return {"warmup_exit_step": -1 if self.warmup_exit_step is None else self.warmup_exit_step}

    def load_state_dict(self, state: dict) -> None:
        s = int(state["warmup_exit_step"])
        self.warmup_exit_step = None if s < 0 else s
