"""Timing helpers shared by the benchmarks: devices, interleaved repeats, medians, environment.

Benchmarks compare variants of the same work (e.g. training with and without a recorder).
Machines drift (thermal state, other processes, allocator warm-up), so variants are run
interleaved, each round running ``steps`` timed steps of each variant in a balanced order
(:func:`round_order`), and compared by the median step time, which ignores the occasional
stall. :func:`aten_ops` counts what a step dispatches: on a GPU, where a small network's
eager step is bound by kernel launches, that count is what a change to the step costs,
and it can be checked on any machine.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

__all__ = [
    "Timings",
    "aten_ops",
    "describe_environment",
    "environment_line",
    "input_size",
    "interleaved",
    "median_interval",
    "round_ratios",
    "spread",
    "summarize",
    "synchronize",
    "timed_call",
]


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class Timings:
    """Per-variant step times in seconds, in the order they ran."""

    steps: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.steps[name])


def timed_call(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, with a device synchronisation before and after."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def interleaved(
    variants: Mapping[str, Callable[[], None]],
    steps: int,
    repeats: int,
    device: torch.device,
    warmup: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
) -> Timings:
    """Run each variant's ``step()`` in rounds: ``warmup`` untimed steps of every variant,
    then ``repeats`` rounds of ``steps`` timed steps per variant, interleaved. Each step is
    timed on its own, with a device synchronisation before and after.

    The order changes from round to round (:func:`round_order`): a variant's first steps
    after a switch pay for the previous variant's footprint in the caches, so a fixed order
    would bill it to the same variant every time."""
    names = list(variants)
    timings = Timings({n: [] for n in names})
    for name in names:
        for _ in range(warmup):
            variants[name]()
    synchronize(device)
    total = repeats * len(names)
    done = 0
    for r in range(repeats):
        for name in round_order(names, r):
            fn, out = variants[name], timings.steps[name]
            out.extend(timed_call(fn, device) for _ in range(steps))
            done += 1
            if progress is not None:
                progress(name, done, total)
    return timings


def round_ratios(timings: Timings, name: str, base: str, steps: int) -> list[float]:
    """Per round of :func:`interleaved` (``steps`` timed steps per variant), the median step
    time of ``name`` over that of ``base`` in the same round. The two ran seconds apart, so
    the machine's drift between rounds cancels; their spread says how far one ratio of
    medians can be trusted."""
    a, b = timings.steps[name], timings.steps[base]
    n = min(len(a), len(b)) // steps * steps
    return [statistics.median(a[i : i + steps]) / statistics.median(b[i : i + steps]) for i in range(0, n, steps)]


def spread(values: list[float]) -> dict:
    """Median, range and a 95 % confidence interval of the median (None: too few rounds)."""
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values),
            "ci95": median_interval(values)}  # fmt: skip


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of ``values`` (independent
    draws): the k-th smallest and the k-th largest, with k the largest for which fewer than
    k of n values fall below the median with probability at most (1 - confidence) / 2
    (Binomial(n, 1/2)). Its coverage is at least ``confidence``; None when n is too small
    for it (n < 6 at 95 %: even min..max covers less)."""
    n = len(values)
    tail, below, k = (1 - confidence) / 2, 0.0, 0
    while k < n:
        below += math.comb(n, k) / 2**n  # P(exactly k values below the median)
        if below > tail:
            break
        k += 1
    if k == 0:
        return None
    xs = sorted(values)
    return xs[k - 1], xs[n - k]


def aten_ops(fn: Callable[[], None]) -> int:
    """How many ATen operators one call of ``fn`` dispatches (views and copies included)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += 1
            return func(*args, **(kwargs or {}))

    counter = _Count()
    with counter:
        fn()
    return counter.n


def round_order(names: list[str], r: int) -> list[str]:
    """The order of round ``r``, from a Williams design: over ``2 * len(names)`` rounds every
    variant comes first equally often and, within rounds, follows every other variant
    equally often (rows ``0, 1, k-1, 2, k-2, ...`` shifted by the round; for an odd count of
    variants, every other run of ``k`` rounds is reversed)."""
    k = len(names)
    base = [(j + 1) // 2 if j % 2 else (k - j // 2) % k for j in range(k)]
    order = [names[(b + r) % k] for b in base]
    return order[::-1] if k % 2 and (r // k) % 2 else order


def summarize(times: list[float]) -> dict:
    """Median, quartiles, min, mean and count of a list of step times (seconds)."""
    if not times:
        return {"n": 0, "median_s": float("nan"), "p25_s": float("nan"), "p75_s": float("nan"), "min_s": float("nan"),
                "mean_s": float("nan")}  # fmt: skip
    # "inclusive" interpolates within the data; the default extrapolates (negative times for small n)
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return {
        "n": len(times),
        "median_s": statistics.median(times),
        "p25_s": q[0],
        "p75_s": q[2],
        "min_s": min(times),
        "mean_s": statistics.fmean(times),
    }


def describe_environment(device: torch.device) -> dict:
    """What the numbers were measured on: the run description plus load and threads."""
    from gradlab.environment import describe

    env = describe(device)
    env.update({
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    })
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    try:
        env["load_average"] = list(os.getloadavg())
    except (AttributeError, OSError):
        pass
    return env


def environment_line(env: dict) -> str:
    """One line of :func:`describe_environment`'s record, for a benchmark's printout."""
    return (f"device: {env['device']} ({env['device_name']}), torch {env['torch']}, "
            f"{env.get('torch_threads', '?')} threads, python {env['python']}")


def input_size(model_name: str) -> tuple[int, int, int]:
    """(C, H, W) of a zoo model's default input; CIFAR-shaped for a name the zoo does not know."""
    try:
        from gradlab.models import info

        return tuple(info(model_name).input_size)
    except Exception:
        return (3, 32, 32)
