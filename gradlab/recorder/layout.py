"""The column layout of a recorded step: which raw value goes where in the step's row.

A recorded step is one row of float32 values on the device (gradlab.recorder.buffer). Each
statistic the recorder computes on the device is a raw value in its own column: a
parameter's gradient, weight and update norms; a probe point's output sum, norm, positive
count and gradient norm; a residual block's input norm. The host derives the statistics
users see (means, stds, fractions, ratios) from these columns at flush time
(gradlab.recorder.derive). Column -1 means "not recorded".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from gradlab import stat_names as S
from gradlab.recorder.bn_stats import is_batchnorm
from gradlab.recorder.targets import Targets

__all__ = ["Layout", "Point", "RowKey"]

RowKey = tuple[str, int, str]  # (layer, index, kind) of the rows a column turns into


class Point:
    """One probe point: its position in the targets and the columns its output fills."""

    __slots__ = ("position", "is_bn", "sum_col", "norm_col", "count_col", "grad_col", "fed", "feeder", "checked")

    def __init__(self, position: int, is_bn: bool = False):
        self.position = position  # in Targets.points and Targets.modules
        self.is_bn = is_bn  # a BatchNorm: its output's sum and norm come from its batch statistics
        self.sum_col = self.norm_col = self.count_col = self.grad_col = -1
        self.fed = False  # its output goes only to the next point, a BatchNorm, whose hooks measure it
        self.feeder: Point | None = None  # (on that BatchNorm's point) the point it measures
        self.checked = False  # a recorded step saw the BatchNorm's input be this point's output

    @property
    def active(self) -> bool:
        return max(self.sum_col, self.norm_col, self.count_col, self.grad_col) >= 0

    @property
    def hooked(self) -> bool:
        """Whether this point's module gets a measuring forward hook (for itself or its feeder)."""
        return not self.fed and (self.active or (self.feeder is not None and self.feeder.active))


@dataclass
class Layout:
    """Every column of the row, by what fills it, and the row keys the host derives them into."""

    width: int  # columns in the row
    param_grad: list[int]  # per parameter (empty: not recorded)
    param_weight: list[int]
    param_update: list[int]
    points: list[Point]  # per probe point, in Targets.points order
    block_input: list[int]  # per residual block: ||x|| of its input (empty: no branch ratios)
    branch_norm: list[int]  # per residual block: ||F(x)||, its branch point's norm column
    output_cols: np.ndarray  # every column a forward hook fills
    param_keys: list[RowKey]
    point_keys: list[RowKey]
    block_keys: list[RowKey]

    @classmethod
    def build(cls, targets: Targets, stats: tuple[str, ...], warn_no_relu: bool = False) -> "Layout":
        """The columns for ``stats`` on ``targets``; pairs each conv with the BatchNorm it feeds.

        warn_no_relu: the user asked for act_zero_frac explicitly; warn if no point can have it.
        """
        want = set(stats)
        width = 0

        def col() -> int:
            nonlocal width
            width += 1
            return width - 1

        n_params = len(targets.params)
        need_grad = bool(want & {S.GRAD_NORM, S.GRAD_WEIGHT_RATIO})
        need_weight = bool(want & {S.WEIGHT_NORM, S.GRAD_WEIGHT_RATIO})
        param_grad = [col() for _ in range(n_params)] if need_grad else []
        param_weight = [col() for _ in range(n_params)] if need_weight else []
        param_update = [col() for _ in range(n_params)] if S.UPDATE_NORM in want else []

        points = [Point(i, is_batchnorm(m)) for i, m in enumerate(targets.modules)]
        branch_points = {b.branch for b in targets.blocks} if S.BRANCH_RATIO in want else set()
        for pt in points:
            if S.ACT_MEAN in want or S.ACT_STD in want:
                pt.sum_col = col()
            if S.ACT_STD in want or pt.position in branch_points:
                pt.norm_col = col()
            if S.ACT_ZERO_FRAC in want and targets.points[pt.position].next_to_relu:
                pt.count_col = col()
            if S.ACT_GRAD_NORM in want:
                pt.grad_col = col()
        block_input = [col() for _ in targets.blocks] if S.BRANCH_RATIO in want else []
        for j in range(len(points) - 1):
            # (a zero count cannot come from the BatchNorm: such a point measures itself)
            if targets.points[j].bn_next and points[j + 1].is_bn and points[j].count_col < 0:
                points[j].fed = True
                points[j + 1].feeder = points[j]
        if warn_no_relu and S.ACT_ZERO_FRAC in want and points and all(p.count_col < 0 for p in points):
            warnings.warn(
                "gradlab: act_zero_frac was asked for, but no probe point is next to a ReLU (an "
                "nn.ReLU module right after it in an nn.Sequential, or a zoo block's final ReLU), "
                "so it will not be recorded. A ReLU applied as F.relu in forward is invisible to "
                "the default probe points: use nn.ReLU modules, or give the model probe_points().",
                RuntimeWarning,
                stacklevel=3,
            )
        outputs = [c for p in points for c in (p.sum_col, p.norm_col, p.count_col) if c >= 0]
        return cls(
            width=width,
            param_grad=param_grad,
            param_weight=param_weight,
            param_update=param_update,
            points=points,
            block_input=block_input,
            branch_norm=[points[b.branch].norm_col for b in targets.blocks] if block_input else [],
            output_cols=np.asarray(outputs, dtype=np.int64),
            **_keys(targets),
        )

    def rekey(self, targets: Targets) -> None:
        """Take the row keys of ``targets`` renumbered (gradlab.recorder.forward_order)."""
        for name, keys in _keys(targets).items():
            setattr(self, name, keys)


def _keys(targets: Targets) -> dict[str, list[RowKey]]:
    return {
        "param_keys": [(p.name, p.index, p.kind) for p in targets.params],
        "point_keys": [(p.name, p.index, p.kind) for p in targets.points],
        "block_keys": [(b.name, b.index, "block") for b in targets.blocks],
    }
