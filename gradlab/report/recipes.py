"""How a report treats runs of several recipes: each run's setting (gradlab.report.grouping),
the sensitivity to each swept key (gradlab.report.sensitivity: its figures, tables and
report.md section) and, with ``select``, the runs at each model's value chosen on validation
error (gradlab.report.selection): what the table, figures and findings then show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from gradlab import families as fam
from gradlab.recipe_keys import short, shown
from gradlab.report import collect as C
from gradlab.report import grouping as G
from gradlab.report import selection as S
from gradlab.report import markdown as MD
from gradlab.report import sensitivity as SENS
from gradlab.report.files import write_csv, write_text
from gradlab.report.render import FigureJob
from gradlab.report.style import depth_palette
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
    n_all = len(next(iter(recipes.sensitivity.values())))
    out = [f"Each model is shown at the {key} with the lowest validation error, mean over its seeds "
           f"({recipes.val_size} images held out of the training set; the test error played no part): "
           f"{len(recipes.shown)} of the {n_all} runs."]
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
    unchosen = recipes.choices[recipes.choices["value"].isna()]
    out += [f"{fam.label(c.family, c.depth)}: no {key} chosen ({c.note}), so it is left out."
            for c in unchosen.itertuples(index=False)]
    return out


def sensitivity_jobs(recipes: Recipes, look) -> list[FigureJob]:
    """A sensitivity figure per swept key (the chosen value ringed)."""
    on = "validation error" if recipes.key else None
    return [FigureJob(f"sensitivity_{key}", f"Sensitivity to {short(key)}", SENS.caption(key, on if key == recipes.key else None),
                      1.0, SENS.figure, (sens, key, depth_palette(sens["depth"]), look,
                                         recipes.choices if key == recipes.key else None))
            for key, sens in recipes.sensitivity.items()]  # fmt: skip


def at_chosen(job: FigureJob, recipes: Recipes) -> FigureJob:
    """The job, its caption saying that each model is drawn at its value chosen on validation."""
    if recipes.key is None:
        return job
    note = f" Each model at its {short(recipes.key)} chosen on validation error (the table's last column)."
    return replace(job, caption=job.caption + note)


def write_sensitivity(recipes: Recipes, figures: dict, out_dir: Path, files: list[Path]) -> str:
    """data/sensitivity_<key>.csv (one row per run) and its table; returns report.md's section."""
    md = ""
    for key, sens in recipes.sensitivity.items():
        chosen = recipes.choices if key == recipes.key else None
        summary = SENS.table(sens, key, chosen)
        write_csv(out_dir / "data" / f"sensitivity_{key}.csv", sens, files)
        text = SENS.to_markdown(summary, key, "validation error")
        write_text(out_dir / f"sensitivity_{key}.md", text, files)
        drawn = figures.get(f"sensitivity_{key}")
        md += f"\n## Sensitivity to {short(key)}\n\n" + (MD.embed(drawn, out_dir) + "\n" if drawn else "") + text
    return md
