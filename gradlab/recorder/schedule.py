"""Which training steps the recorder measures.

A recorded step costs a few reductions per probe point; an unrecorded one costs nothing
(the hooks are not even attached). The schedule is dense at the start, where the
gradient-flow picture changes fastest, and sparse afterwards.

This module does not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradlab.errors import RecorderError

__all__ = ["Schedule", "default_schedule"]


@dataclass(frozen=True)
class Schedule:
    """Record step ``s`` when ``s % every == 0``, or when ``s < dense_until`` and
    ``s % dense_every == 0``. Step 0 is always recorded (it is a multiple of ``every``).

    ``Schedule(every=50, dense_until=100, dense_every=1)`` records steps 0..99, then
    100, 150, 200, ...
    """

    every: int = 50
    dense_until: int = 100
    dense_every: int = 1

    def __post_init__(self) -> None:
        for name in ("every", "dense_until", "dense_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise RecorderError(f"Schedule {name} must be an integer, not {value!r}.")
        if self.every < 1 or self.dense_every < 1:
            raise RecorderError(
                f"Schedule every={self.every} and dense_every={self.dense_every} must be >= 1 "
                "(use every=1 to record every step)."
            )
        if self.dense_until < 0:
            raise RecorderError(f"Schedule dense_until={self.dense_until} must be >= 0 (0 disables it).")

    def __call__(self, step: int) -> bool:
        """True when ``step`` is recorded."""
        if step % self.every == 0:
            return True
        return step < self.dense_until and step % self.dense_every == 0

    def steps(self, total_steps: int) -> list[int]:
        """The recorded steps among ``0 .. total_steps - 1``."""
        return [s for s in range(total_steps) if self(s)]

    def count(self, total_steps: int) -> int:
        """How many of the steps ``0 .. total_steps - 1`` are recorded (closed form)."""
        if total_steps <= 0:
            return 0
        regular = (total_steps - 1) // self.every + 1
        dense_end = min(self.dense_until, total_steps)
        dense = (dense_end - 1) // self.dense_every + 1 if dense_end > 0 else 0
        # steps counted twice: below dense_end, multiples of lcm(every, dense_every)
        both = (dense_end - 1) // math.lcm(self.every, self.dense_every) + 1 if dense_end > 0 else 0
        return regular + dense - both

    def to_dict(self) -> dict:
        return {"every": self.every, "dense_until": self.dense_until, "dense_every": self.dense_every}


def default_schedule(total_steps: int) -> Schedule:
    """A schedule with about 300 recorded steps whatever the run length.

    ``every = total/200`` (200 evenly spaced records) plus a dense start: the first
    ``total/50`` steps (at least 100) are recorded about 100 times. For the paper's longest
    CIFAR run, ``default_schedule(64_000) == Schedule(every=320, dense_until=1280,
    dense_every=12)``, which records 305 steps (the size of that record: docs/recorder.md).
    For short runs (``total_steps <= 200``) every step is recorded.
    """
    if total_steps < 1:
        raise RecorderError(f"total_steps must be >= 1, not {total_steps}.")
    every = max(1, total_steps // 200)
    dense_until = min(total_steps, max(100, total_steps // 50))
    dense_every = max(1, dense_until // 100)
    return Schedule(every=every, dense_until=dense_until, dense_every=dense_every)
