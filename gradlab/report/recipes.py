"""How a report treats runs of several recipes: each run's setting (gradlab.report.grouping),
the sensitivity to each swept key (gradlab.report.sensitivity) and, with ``select``, the runs
at each model's value chosen on validation error (gradlab.report.selection): what the
table, figures and findings then show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from gradlab import families as fam
from gradlab.recipe_keys import short, shown
from gradlab.report import collect as C
from gradlab.report import grouping as G
from gradlab.report import selection as S
from gradlab.report import sensitivity as SENS
from gradlab.report.wording import fmt_pct
from gradlab.seed_noise import from_summary


@dataclass
class Recipes:
    shown: list  # the runs the table, figures and findings show
    sensitivity: dict[str, pd.DataFrame] = field(default_factory=dict)  # swept key -> one row per run
    key: str | None = None  # the key chosen on validation
    choices: pd.DataFrame | None = None  # family, depth, value, val_mean, n, note
    val_size: int = 0  # validation images the choice was made on


def sort_runs(runs: list, settings: dict[str, dict]) -> list:
    """Runs in the order of their differing values (numbers by value), so rows and lines follow it."""
    def key(run):
        return [(0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))
                for v in settings[str(run.path)].values()]
    return sorted(runs, key=key)


def prepare(runs: list, select=(), on: str = "val") -> Recipes:
    """Settings, sensitivity frames and the selection; each run's ``setting`` is left as the
    table shows it (without the selected key)."""
    settings = G.assign_settings(runs)
    runs[:] = sort_runs(runs, settings)
    keys = SENS.swept_keys(settings)
    S.check_request(select, on, swept=keys)
    frames = {k: SENS.frame(runs, settings, k) for k in keys}
    out = Recipes(shown=list(runs), sensitivity=frames)
    if not select:
        G.assign_settings(runs)
        return out
    key = select[0]
    out.key, out.val_size = key, _val_size(runs)
    out.choices = S.choose(frames[key], key)
    G.assign_settings(runs, ignore={key})
    keep = S.chosen_runs(frames[key], out.choices)
    out.shown = [r for r in runs if C.run_key(r) in keep]
    return out


def _val_size(runs) -> int:
    sizes = {int((r.spec.get("data") or {}).get("val_size") or 0) for r in runs}
    return max(sizes, default=0)


def chosen_column(models: pd.DataFrame, recipes: Recipes) -> pd.DataFrame:
    """by_model with a ``chosen`` column ("lr 0.1 (val 3.3%)") when a value was chosen."""
    if recipes.choices is None:
        return models
    pick = {(f, int(d)): S.chosen_text(recipes.key, v, m)
            for f, d, v, m in recipes.choices[["family", "depth", "value", "val_mean"]].itertuples(index=False)}
    return models.assign(chosen=[pick.get((f, int(d)), "") for f, d in zip(models["family"], models["depth"])])


def selection_sentences(models: pd.DataFrame, recipes: Recipes) -> list[str]:
    """Which value each family was shown at, on what it was chosen, and the test error there."""
    if recipes.choices is None:
        return []
    key = short(recipes.key)
    out = [f"Each model is shown at the {key} with the lowest validation error, mean over its seeds "
           f"({recipes.val_size} images held out of the training set; the test error played no part)."]
    pick = recipes.choices.set_index(["family", "depth"])
    for family in fam.ordered(models["family"]):
        parts = []
        for m in models[models["family"] == family].sort_values("depth").itertuples(index=False):
            if (family, m.depth) not in pick.index or not math.isfinite(pick.loc[(family, m.depth), "value"]):
                continue
            c = pick.loc[(family, m.depth)]
            test = from_summary(m.test_mean, m.test_std, m.n)
            band = f", 95 % interval ±{100 * test.half:.1f} points" if test.known else ""
            parts.append(f"{fam.label(family, m.depth)} at {key} {shown(c['value'])} (validation "
                         f"{fmt_pct(c['val_mean'])}, test {fmt_pct(m.test_mean)}{band})")
        if parts:
            out.append(f"{fam.get(family).title}: " + "; ".join(parts) + ".")
    return out
