"""Index tensors a recorded step's batched derivation needs, built once per step layout.

The step-time writers (gradlab.recorder.deferred, bn_stats, bn_grads) gather what the hooks
queued and scatter the results into the step's row with index tensors that depend only on
the step's layout (which tensors, their shapes, their columns). A layout recurs every
recorded step, so its plan is built once; a new batch size or input shape adds one.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["MAX_PLANS", "cached_plan"]

MAX_PLANS = 16  # distinct step layouts kept; past that the cache starts over


def cached_plan(plans: dict, key, make: Callable[[], tuple]) -> tuple:
    """``plans[key]``, built by ``make()`` the first time (``plans`` holds at most MAX_PLANS)."""
    plan = plans.get(key)
    if plan is None:
        if len(plans) >= MAX_PLANS:
            plans.clear()
        plan = plans[key] = make()
    return plan
