"""How far another seed could move a final error: the 95 % t-interval of a mean over seeds.

A comparison between two models (a deeper and a shallower net, a residual and a plain net,
two families) is made only when their intervals do not overlap; otherwise the difference is
within the noise of the seeds. One seed gives no noise estimate at all. The findings'
degradation rule and the report's summary both judge through here. numpy and scipy only
(the report side imports it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


def t_quantile(n: int, level: float = LEVEL) -> float:
    """Student's t quantile for a two-sided ``level`` interval of a mean of n values (n - 1
    degrees of freedom): 12.71 for n = 2, 4.30 for n = 3."""
    if n < 2:
        return float("nan")
    from scipy import stats  # here: importing the findings (the live recorder's too) stays light

    return float(stats.t.ppf(0.5 + level / 2, n - 1))


@dataclass(frozen=True)
class Interval:
    """Mean, sample std (ddof 1), n and the half-width of the 95 % t-interval of the mean
    (NaN with one value: no noise estimate)."""

    mean: float
    std: float
    n: int
    half: float

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    @property
    def known(self) -> bool:
        """Whether there is a noise estimate (two seeds or more)."""
        return self.n >= 2 and math.isfinite(self.half)


def interval(values) -> Interval:
    """The interval of the finite ``values``."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return Interval(float("nan"), float("nan"), 0, float("nan"))
    std = float(v.std(ddof=1)) if n > 1 else float("nan")
    return Interval(float(v.mean()), std, n, t_quantile(n) * std / math.sqrt(n) if n > 1 else float("nan"))


def from_summary(mean: float, std: float, n: int) -> Interval:
    """The interval of a mean, sample std and n already computed (a row of a table)."""
    n = int(n)
    half = t_quantile(n) * std / math.sqrt(n) if n > 1 and math.isfinite(std) else float("nan")
    return Interval(float(mean), float(std), n, half)


def apart(a: Interval, b: Interval) -> bool | None:
    """True when the two intervals do not overlap, False when they do, None when either
    model has one seed (no noise estimate)."""
    if not (a.known and b.known):
        return None
    return a.high < b.low or b.high < a.low


def seeds_words(a: Interval, b: Interval) -> str:
    """'2 seeds' or '2 and 3 seeds': what a verdict rests on."""
    return f"{a.n} seeds" if a.n == b.n else f"{min(a.n, b.n)} and {max(a.n, b.n)} seeds"
