"""Degradation (He et al. 2015): within one family and recipe, a deeper net that ends with a
higher training error than the shallowest one, beyond the seed noise (the 95 % t-intervals of
the two means do not overlap: gradlab.seed_noise, as the report's summary judges) — or, with
one seed per depth, by more than ``margin`` (no noise estimate exists then, and the finding
says so). Training error, not test error: degradation is an optimization failure, not
overfitting."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from gradlab import families as fam
from gradlab.findings.finding import WARNING, Finding
from gradlab.findings.rule import Rule
from gradlab.findings.thresholds import Threshold
from gradlab.seed_noise import apart, interval, seeds_words

THRESHOLDS = {"margin": Threshold(
    0.05, "the least rise of the final training error (absolute) that is degradation, with one seed per depth",
    "gradlab: 5 points; one seed gives no noise estimate, so the line sits well above float and batch-order "
    "noise: run seeds (--seeds 0,1,2) to judge against the real spread")}


def _finals(views) -> dict[tuple, dict[int, list[float]]]:
    """(family key, recipe) -> depth -> final training errors of its seeds."""
    out: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for v in views:
        err, depth = v.run.final("train_err"), v.run.depth
        if depth > 0 and np.isfinite(err):
            recipe = repr(sorted((v.run.spec.get("recipe") or {}).items()))
            out[(v.run.family_key, recipe, v.run.spec.get("experiment", ""))][depth].append(err)
    return out


def check_group(views, th):
    found = []
    for (family, _, _), by_depth in _finals(views).items():
        if len(by_depth) < 2:
            continue
        shallow = min(by_depth)
        base = by_depth[shallow]
        for depth in sorted(d for d in by_depth if d > shallow):
            deep = by_depth[depth]
            rise = float(np.mean(deep) - np.mean(base))
            a, b = interval(base), interval(deep)
            beyond = apart(a, b)
            if beyond is None:
                beyond, basis = rise > th["margin"], f"beyond {th['margin']:.0%} (one seed each: no noise estimate)"
            else:
                basis = f"beyond the 95 % intervals of {seeds_words(a, b)} ({a.low:.1%}–{a.high:.1%} at depth {shallow})"
            if rise <= 0 or not beyond:
                continue
            deep_label, shallow_label = fam.label(family, depth), fam.label(family, shallow)
            found.append(Finding(
                RULE.name, WARNING, deep_label,
                f"{deep_label} ends with a higher training error ({np.mean(deep):.1%}) than {shallow_label} "
                f"({np.mean(base):.1%}): degradation",
                f"final training error {np.mean(deep):.1%} at depth {depth} against {np.mean(base):.1%} at depth "
                f"{shallow}: {rise:.1%} higher, {basis}",
                "the deeper net is harder to optimize, although it could represent the shallower one",
                "add identity shortcuts (He et al. 2015), or a residual-friendly init, and compare again",
                figure="final_error", extra={"family": family, "depths": (shallow, depth)},
            ))  # fmt: skip
    return found


RULE = Rule("degradation", "a deeper net of a family that ends with a higher training error than the shallowest",
            ("train_err",), THRESHOLDS, check_group=check_group)  # fmt: skip
