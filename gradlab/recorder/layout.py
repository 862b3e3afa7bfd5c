"""The column layout of a recorded step: which raw value goes where in the step's row.

A recorded step is one row of float32 values on the device (gradlab.recorder.buffer).
Each raw value a selected statistic needs (gradlab.recorder.statistics) gets a column
wherever the statistic applies: per parameter, per probe point (a reduction of its
output, or ||dL/dh||), per residual block. The host derives the statistics from these
columns at flush time (gradlab.recorder.derive). Column -1 means "not recorded".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from gradlab.recorder import statistics as T
from gradlab.recorder.bn_stats import is_batchnorm
from gradlab.recorder.statistics import Reduction, Statistic
from gradlab.recorder.targets import Targets

__all__ = ["Layout", "PointColumns", "RowKey"]

RowKey = tuple[str, int, str]  # (layer, index, kind) of the rows a column turns into


@dataclass(frozen=True)
class PointColumns:
    """The columns one probe point's hooks fill (``position``: its place in Targets.points)."""

    position: int
    is_bn: bool  # a BatchNorm: its output's sum and norm come from its batch statistics
    channel_first: bool  # its output is [N, C, ...] (else [..., features])
    reductions: tuple[tuple[Reduction, int], ...]  # of its output, and their columns
    grad_col: int  # ||dL/dh|| (-1: not recorded)
    fed: bool  # its output goes only to the next point, a BatchNorm, whose hooks can measure it

    def col(self, reduction: Reduction) -> int:
        return next((c for r, c in self.reductions if r is reduction), -1)


@dataclass
class Layout:
    """Every column of the row, by what fills it, and the row keys the host derives them into."""

    width: int  # columns in the row
    statistics: list[Statistic]  # the selected ones, in declaration order
    params: dict[str, list[int]]  # raw value -> a column per parameter (absent: not recorded)
    param_width: int  # the parameters' columns come first: 0 .. param_width - 1
    points: list[PointColumns]  # per probe point, in Targets.points order
    blocks: dict[str, list[int]]  # raw value -> a column per residual block
    param_keys: list[RowKey]
    point_keys: list[RowKey]
    block_keys: list[RowKey]

    @classmethod
    def build(cls, targets: Targets, stats: tuple[str, ...], warn_unrecorded: bool = False) -> "Layout":
        """The columns for ``stats`` on ``targets``; pairs each conv with the BatchNorm it feeds.

        warn_unrecorded: the user chose the statistics; warn about one that no point qualifies for.
        """
        chosen = T.selected(stats)
        width = 0

        def cols(n: int) -> list[int]:
            nonlocal width
            width += n
            return list(range(width - n, width))

        needs = {site: {n for s in chosen if s.site == site for n in s.needs}
                 for site in (T.PARAM_SITE, T.OUTPUT_SITE, T.BLOCK_SITE)}  # fmt: skip
        params = {raw: cols(len(targets.params)) for raw in (T.P_GRAD, T.P_WEIGHT, T.P_UPDATE)
                  if raw in needs[T.PARAM_SITE]}  # fmt: skip
        branches = {b.branch for b in targets.blocks} if T.BRANCH_NORM in needs[T.BLOCK_SITE] else set()
        output_stats = [s for s in chosen if s.site == T.OUTPUT_SITE]
        points = []
        for i, (point, module) in enumerate(zip(targets.points, targets.modules)):
            act = targets.act_next.get(point.name, "")
            wanted = {n for s in output_stats if s.at(point, act) for n in s.needs}
            if i in branches:
                wanted.add(T.NORM)
            reductions = tuple((r, cols(1)[0]) for r in T.REDUCTIONS if r in wanted)
            grad_col = cols(1)[0] if T.GRAD in wanted else -1
            points.append([i, is_batchnorm(module), point.kind in T.CHANNEL_FIRST, reductions, grad_col, False])
        blocks = {}
        if T.INPUT_NORM in needs[T.BLOCK_SITE]:
            blocks[T.INPUT_NORM] = cols(len(targets.blocks))
        if branches:
            blocks[T.BRANCH_NORM] = [dict(points[b.branch][3])[T.NORM] for b in targets.blocks]
        for j in range(len(points) - 1):
            # a BatchNorm gives only sums and norms: a point that needs more measures itself
            if targets.points[j].bn_next and points[j + 1][1] and all(r.from_batchnorm for r, _ in points[j][3]):
                points[j][5] = True
        if warn_unrecorded:
            _warn_unrecorded(output_stats, targets)
        return cls(width=width, statistics=chosen, params=params, param_width=sum(map(len, params.values())),
                   points=[PointColumns(*p) for p in points],
                   blocks=blocks, **_keys(targets))  # fmt: skip

    @cached_property
    def output_cols(self) -> np.ndarray:
        """Every column a forward hook fills (computed once: the columns never change)."""
        return np.asarray([c for p in self.points for _, c in p.reductions] + self.blocks.get(T.INPUT_NORM, []),
                          dtype=np.int64)  # fmt: skip

    def columns(self, stat: Statistic) -> dict | None:
        """need -> [sites] columns (-1 where there is none) of statistic ``stat``; None when
        the layout has none of it."""
        if stat.site == T.PARAM_SITE:
            found = {n: self.params.get(n) for n in stat.needs}
        elif stat.site == T.BLOCK_SITE:
            found = {n: self.blocks.get(n) for n in stat.needs}
        else:
            found = {n: [p.grad_col if n == T.GRAD else p.col(n) for p in self.points] for n in stat.needs}
        if any(c is None for c in found.values()):
            return None
        return {n: np.asarray(c, dtype=np.int64) for n, c in found.items()}

    def keys(self, site: str) -> list[RowKey]:
        return {T.PARAM_SITE: self.param_keys, T.OUTPUT_SITE: self.point_keys, T.BLOCK_SITE: self.block_keys}[site]

    def rekey(self, targets: Targets) -> None:
        """Take the row keys of ``targets`` renumbered (gradlab.recorder.forward_order)."""
        for name, keys in _keys(targets).items():
            setattr(self, name, keys)


def _warn_unrecorded(output_stats: list[Statistic], targets: Targets) -> None:
    """Warn once about each statistic asked for that no probe point qualifies for (under any
    of its declarations)."""
    recorded = {s.name for s in output_stats for p in targets.points if s.at(p, targets.act_next.get(p.name, ""))}
    warned = set()
    for s in output_stats:
        if s.at_text and targets.points and s.name not in recorded | warned:
            warned.add(s.name)
            warnings.warn(f"gradlab: {s.name} was asked for, but no probe point is {s.at_text}.", RuntimeWarning,
                          stacklevel=4)


def _keys(targets: Targets) -> dict[str, list[RowKey]]:
    return {
        "param_keys": [(p.name, p.index, p.kind) for p in targets.params],
        "point_keys": [(p.name, p.index, p.kind) for p in targets.points],
        "block_keys": [(b.name, b.index, "block") for b in targets.blocks],
    }
