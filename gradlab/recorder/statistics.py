"""Every statistic the recorder records, declared once: its name, where it is measured, what
the device reduces for it and how the host derives it.

A statistic's value is derived on the host at flush time, in numpy, from raw values the
device reduced while the step ran (one float32 column each in the step's row:
gradlab.recorder.layout). Several statistics share raw values (act_mean and act_std both
read an output's sum), and a value several points see is reduced once. The raw values:

* per parameter tensor: the norms of its gradient, its weight, and its change since the
  previous record (a stack per shape, reduced row-wise: gradlab.recorder.params);
* per probe point: a :class:`Reduction` of its output h (in the forward hook, or at
  ``step()`` over a stack of samples: the same arithmetic, gradlab.recorder.reductions),
  and ``||dL/dh||`` (its gradient hook);
* per residual block: the norm of its input x, and its branch point's output norm.

To add a statistic: name it in gradlab.stat_names and declare it here (a new reduction of
the output comes with it: its whole-tensor and row-wise forms). Nothing else changes: the
layout gives it columns where it applies, the hooks reduce what it needs, derive turns
the columns into its rows. (Where it is recorded is its ``at``: a test of the probe point
and of the saturating activation gradlab.recorder.targets found after it.)

act_sat_frac, the fraction of outputs in a saturating activation's flat tails, is measured on
the point's output x, the activation's input: sigma(x) < 0.01 or > 0.99 exactly when
|x| > ln 99 = 4.5951, and |tanh(x)| > 0.99 when |x| > atanh(0.99) = ln(199)/2 = 2.6467 (a
float32 sigma(x) or tanh(x) compared with the bound may disagree for x within ~1e-5 of it).
The bounds are the usual convention, outputs within 1% of the ends of the range, and
where they put the tails: there the slope is sigma'(x) = sigma(1 - sigma) < 0.0099, 3.96% of
sigma'(0) = 1/4, and tanh'(x) = 1 - tanh^2 < 0.0199, 1.99% of tanh'(0) = 1: a gradient
through such a unit shrinks more than 100-fold (sigmoid) or 50-fold (tanh). Saturation of
sigmoid and tanh layers is what Glorot & Bengio (2010, "Understanding the difficulty of
training deep feedforward neural networks", sec. 3) watched: the top sigmoid layer driven to
0 early in training, tanh layers saturating one after another from the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from gradlab import stat_names as S
from gradlab.models.probe_points import BLOCK, BN, BRANCH, CONV, ProbePoint
from gradlab.recorder.reductions import COUNT_UNIT, F32, count, count_beyond, flat, norm, total

__all__ = ["BLOCK_SITE", "COUNT", "DEAD", "GRAD", "NORM", "OUTPUT_SITE", "PARAM_SITE", "REDUCTIONS", "SATURATES_AT",
           "SAT_SIGMOID", "SAT_TANH", "STATISTICS", "SUM", "Reduction", "Statistic", "selected"]  # fmt: skip

PARAM_SITE, OUTPUT_SITE, BLOCK_SITE = "param", "output", "block"

# raw values that are not reductions of an output
P_GRAD, P_WEIGHT, P_UPDATE = "grad", "weight", "update"  # per parameter (gradlab.recorder.params)
GRAD = "grad"  # per point: ||dL/dh|| (gradient hooks)
INPUT_NORM, BRANCH_NORM = "input_norm", "branch_norm"  # per block: ||x||, and its branch point's NORM

CHANNEL_FIRST = (CONV, BN, BRANCH, BLOCK)  # kinds whose outputs are [N, C, ...]; others [..., features]


@dataclass(frozen=True, eq=False)
class Reduction:
    """A raw value reduced on the device from a point's output h (or the sample of it the
    recorder uses): ``whole(h, scratch, channel_first)`` in a hook, a 0-dim float32 tensor;
    ``rows(x, channel_first)`` over a [k, *h.shape] stack of k outputs at once, a [k]
    float32 tensor. ``scratch(t)`` is a reused buffer shaped like t for an elementwise pass;
    ``channel_first``: h is [N, C, ...] (convs, their norms and blocks), else [..., features].
    ``from_batchnorm``: a BatchNorm's batch statistics give it exactly, without reading h
    (gradlab.recorder.bn_stats)."""

    name: str
    whole: Callable[..., torch.Tensor]
    rows: Callable[..., torch.Tensor]
    from_batchnorm: bool = False

    def __repr__(self) -> str:
        return f"Reduction({self.name})"


def _rest(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.dim()))


def _count_whole(h, scratch, channel_first):
    f = flat(h)
    return count(h) if f is None else count(f, out=scratch(f))


def _dead_fraction(h: torch.Tensor, unit: int, keep: tuple[int, ...] = ()) -> torch.Tensor:
    """The fraction of units (channels or features, axis ``unit``) that are <= 0 everywhere
    else, i.e. for every example and position (``keep``: leading axes not reduced)."""
    axes = tuple(d for d in range(h.dim()) if d != unit and d not in keep)
    alive = h.amax(dim=axes) > 0 if axes else h > 0
    return 1.0 - alive.to(F32).mean(dim=-1)


def _dead_whole(h, scratch, channel_first):
    if h.dim() < 2:
        return _dead_fraction(h.unsqueeze(0), 1)
    return _dead_fraction(h, 1 if channel_first else h.dim() - 1)


def _dead_rows(x, channel_first):
    if x.dim() < 3:
        return _dead_fraction(x.unsqueeze(1), 2, keep=(0,))
    return _dead_fraction(x, 2 if channel_first else x.dim() - 1, keep=(0,))


# |x| beyond which the activation applied to x is in a flat tail (the module docstring)
SATURATES_AT = {"sigmoid": math.log(99.0), "tanh": math.atanh(0.99)}


def _beyond(t: float) -> tuple[Callable, Callable]:
    """whole and rows of the count of elements with |h| > t (in COUNT_UNITs)."""

    def whole(h, scratch, channel_first):
        f = flat(h)
        return count_beyond(h, t) if f is None else count_beyond(f, t, out=scratch(f))

    return whole, lambda x, cf: count_beyond(x, t, dim=_rest(x))


SUM = Reduction("sum", lambda h, scratch, cf: total(h), lambda x, cf: total(x, dim=_rest(x)), from_batchnorm=True)
NORM = Reduction("norm", lambda h, scratch, cf: norm(h), lambda x, cf: norm(x, dim=_rest(x)), from_batchnorm=True)
COUNT = Reduction("count", _count_whole, lambda x, cf: count(x, dim=_rest(x)))  # elements > 0, times COUNT_UNIT
DEAD = Reduction("dead", _dead_whole, _dead_rows)  # fraction of units <= 0 for every example
SAT_SIGMOID = Reduction("sat_sigmoid", *_beyond(SATURATES_AT["sigmoid"]))  # elements |x| > ln 99
SAT_TANH = Reduction("sat_tanh", *_beyond(SATURATES_AT["tanh"]))  # elements |x| > atanh(0.99)
REDUCTIONS = (SUM, NORM, COUNT, DEAD, SAT_SIGMOID, SAT_TANH)  # (their order: the deferred path's order of work)


def _everywhere(point: ProbePoint, act: str) -> bool:
    return True


def _next_to_relu(point: ProbePoint, act: str) -> bool:
    return point.next_to_relu


def _before(name: str) -> Callable[[ProbePoint, str], bool]:
    return lambda point, act: act == name


@dataclass(frozen=True)
class Statistic:
    """One statistic: ``needs`` are raw values at its ``site`` (Reductions of the output, or
    the names above); ``derive(raw)`` makes its values from them, ``raw[name]`` being a
    [steps, sites] float64 array (``raw.numel``: the elements each output's sums cover);
    ``at(point, act)`` says at which probe points it is recorded (output statistics; ``act``:
    the saturating activation that follows the point, "sigmoid", "tanh" or "":
    ``Targets.act_next``), ``at_text`` how to say so when none qualifies. A name may be
    declared more than once, for points that measure it differently (act_sat_frac: one bound
    per activation); each point qualifies for one of them at most."""

    name: str
    site: str
    needs: tuple
    derive: Callable[["object"], np.ndarray]
    at: Callable[[ProbePoint, str], bool] = _everywhere
    at_text: str = ""

    @property
    def per_element(self) -> bool:
        """Whether it needs the output to have been measured (numel > 0) on that step."""
        return any(isinstance(n, Reduction) for n in self.needs)


def _std(raw) -> np.ndarray:
    mean = raw[SUM] / raw.numel
    var = np.maximum(raw[NORM] * raw[NORM] / raw.numel - mean * mean, 0.0)
    return np.sqrt(np.where(np.isfinite(raw[NORM]) & np.isfinite(mean), var, np.nan))


RELU_TEXT = ("next to a ReLU (an nn.ReLU module right after it in an nn.Sequential, or a zoo block's final "
             "ReLU), so it will not be recorded. A ReLU applied as F.relu in forward is invisible to the "
             "default probe points: use nn.ReLU modules, or give the model probe_points()")

SAT_TEXT = ("followed by a sigmoid or tanh (an nn.Sigmoid or nn.Tanh module right after it in an nn.Sequential, "
            "or a zoo net built with act='sigmoid'/'tanh'), so it will not be recorded. One applied as "
            "torch.sigmoid/torch.tanh in your own model's forward is invisible to the recorder: use "
            "nn.Sigmoid/nn.Tanh modules, or give the model probe_points() whose points set act_after")


def _fraction(reduction: Reduction) -> Callable:
    return lambda r: np.rint(r[reduction] / COUNT_UNIT) / r.numel


STATISTICS = (
    Statistic(S.GRAD_NORM, PARAM_SITE, (P_GRAD,), lambda r: r[P_GRAD]),
    Statistic(S.WEIGHT_NORM, PARAM_SITE, (P_WEIGHT,), lambda r: r[P_WEIGHT]),
    # undefined where ||w|| = 0 (a zero-initialised bias): NaN, which means skip
    Statistic(S.GRAD_WEIGHT_RATIO, PARAM_SITE, (P_GRAD, P_WEIGHT),
              lambda r: np.where(r[P_WEIGHT] > 0, r[P_GRAD] / r[P_WEIGHT], np.nan)),
    Statistic(S.UPDATE_NORM, PARAM_SITE, (P_UPDATE,), lambda r: r[P_UPDATE]),  # NaN on the first record
    Statistic(S.ACT_MEAN, OUTPUT_SITE, (SUM,), lambda r: r[SUM] / r.numel),
    Statistic(S.ACT_STD, OUTPUT_SITE, (SUM, NORM), _std),  # population std
    Statistic(S.ACT_ZERO_FRAC, OUTPUT_SITE, (COUNT,), lambda r: 1.0 - np.rint(r[COUNT] / COUNT_UNIT) / r.numel,
              at=_next_to_relu, at_text=RELU_TEXT),
    Statistic(S.ACT_GRAD_NORM, OUTPUT_SITE, (GRAD,), lambda r: r[GRAD]),
    Statistic(S.BRANCH_RATIO, BLOCK_SITE, (BRANCH_NORM, INPUT_NORM), lambda r: r[BRANCH_NORM] / r[INPUT_NORM]),
    Statistic(S.ACT_DEAD_FRAC, OUTPUT_SITE, (DEAD,), lambda r: r[DEAD], at=_next_to_relu, at_text=RELU_TEXT),
    Statistic(S.ACT_SAT_FRAC, OUTPUT_SITE, (SAT_SIGMOID,), _fraction(SAT_SIGMOID), at=_before("sigmoid"),
              at_text=SAT_TEXT),
    Statistic(S.ACT_SAT_FRAC, OUTPUT_SITE, (SAT_TANH,), _fraction(SAT_TANH), at=_before("tanh"), at_text=SAT_TEXT),
)


def selected(names: tuple[str, ...]) -> list[Statistic]:
    """The statistics named (names checked by gradlab.stat_names.checked), in declaration order."""
    want = set(names)
    return [s for s in STATISTICS if s.name in want]
