"""Sensitivity to a swept recipe value: final validation and test error against each value
tried, a panel per family, a line per depth, the seeds as a band (min–max), the chosen value
marked. How much a comparison depends on a value tuned for one family is read off here.
"""

from __future__ import annotations

import math

import pandas as pd

from gradlab import families as fam
from gradlab.recipe_keys import short, shown
from gradlab.report import collect as C
from gradlab.report import grouping as G
from gradlab.report.style import Style, new_figure, panel_grid
from gradlab.report.wording import pct
from gradlab.seed_noise import interval

COLUMNS = ["run", "family", "depth", "seed", "label", "value", "val_err", "test_err", "train_err", "state", "note"]


def swept_keys(settings: dict[str, dict]) -> list[str]:
    """Recipe keys whose numeric values differ between runs (data settings and lists left out)."""
    keys = dict.fromkeys(k for s in settings.values() for k in s)
    numeric = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    return [k for k in keys if not k.startswith("data.") and all(numeric(s.get(k)) for s in settings.values())]


def frame(runs, settings: dict[str, dict], key: str) -> pd.DataFrame:
    """One row per run: its model without ``key`` (family key, depth), the key's value and its
    final errors. Leaves each run's ``setting`` without ``key``."""
    G.assign_settings(runs, ignore={key})
    finals = C.finals(runs)
    value = {C.run_key(r): settings[str(r.path)].get(key) for r in runs}
    finals["value"] = finals["run"].map(value).astype(float)
    return finals[COLUMNS]


def table(sens: pd.DataFrame, key: str, choices: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (family, depth, value): n, mean ± std and 95 % interval of the validation and test
    errors, and whether the value was chosen."""
    chosen = set() if choices is None else {(f, d, v) for f, d, v in choices[["family", "depth", "value"]].itertuples(index=False)}
    rows = []
    for (family, depth, value), g in sens.groupby(["family", "depth", "value"], sort=False):
        val, test = interval(g["val_err"]), interval(g["test_err"])
        rows.append({"family": family, "depth": depth, "label": fam.label(family, depth), key: value, "n": len(g),
                     "val_mean": val.mean, "val_std": val.std, "val_ci": val.half,
                     "test_mean": test.mean, "test_std": test.std, "test_ci": test.half,
                     "chosen": (family, depth, value) in chosen})
    out = pd.DataFrame(rows)
    return C.sort_models(out, extra=(key,)).reset_index(drop=True) if len(out) else out


def to_markdown(summary: pd.DataFrame, key: str, on: str) -> str:
    """The sensitivity table: one row per model and value, the chosen one in bold."""
    from gradlab.report.tables import format_error

    lines = [f"| model | {short(key)} | n | validation error (%) | test error (%) |", "|:--|--:|--:|--:|--:|"]
    for r in summary.itertuples(index=False):
        mark = "**" if r.chosen else ""
        lines.append(f"| {mark}{r.label}{mark} | {mark}{shown(getattr(r, key))}{mark} | {r.n} | "
                     f"{format_error(r.val_mean, r.val_std, r.n, r.val_ci)} | "
                     f"{format_error(r.test_mean, r.test_std, r.n, r.test_ci)} |")
    note = f" Bold: the value chosen on {on}." if summary["chosen"].any() else ""
    return "\n".join(lines) + ("\n\nFinal errors at each value tried: mean ± std over n seeds [95 % t-interval of "
                               f"the mean].{note}\n")


def figure(sens: pd.DataFrame, key: str, palette: dict, style: Style, choices: pd.DataFrame | None = None):
    """Final validation (solid) and test (dashed) error against the value, a panel per family,
    a line per depth, seeds as a band (min–max); the chosen value ringed."""
    families = fam.ordered(sens["family"])
    nrows, ncols = panel_grid(len(families))
    fig = new_figure(style.full_width, style.panel_height * (0.35 + nrows))
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    for ax in axes[len(families):]:
        ax.set_visible(False)
    values = sorted(sens["value"].dropna().unique())
    log = len(values) > 2 and values[0] > 0 and values[-1] / values[0] >= 10
    w = style.rc.get("lines.linewidth", 1.0)
    pick = {} if choices is None else {(f, int(d)): v for f, d, v in choices[["family", "depth", "value"]].itertuples(index=False)}
    for ax, family in zip(axes, families):
        sub = sens[sens["family"] == family]
        for depth in sorted(sub["depth"].unique()):
            g = sub[sub["depth"] == depth].groupby("value", sort=True)
            color = palette[int(depth)]
            for col, ls, lw in (("val_err", "-", 1.3), ("test_err", "--", 0.9)):
                mean = pct(g[col].mean())
                if mean.notna().any():
                    ax.plot(mean.index, mean.to_numpy(), ls=ls, color=color, lw=lw * w, marker="o", ms=2.5 * w,
                            label=f"{fam.label(family, depth)} {'val' if col == 'val_err' else 'test'}")
                    ax.fill_between(mean.index, pct(g[col].min()), pct(g[col].max()), color=color, alpha=0.15, lw=0)
            chosen = pick.get((family, int(depth)))
            if chosen is not None and not (isinstance(chosen, float) and math.isnan(chosen)):
                y = pct(sub[(sub["depth"] == depth) & (sub["value"] == chosen)]["val_err"].mean())
                ax.plot([chosen], [y], ls="none", marker="o", ms=8 * w, mfc="none", mec=color, mew=1.2 * w, zorder=5)
        ax.set_title(fam.get(family).panel_title)
        if log:
            ax.set_xscale("log")
        ax.set_xticks(values)
        ax.set_xticklabels([shown(v) for v in values])
        ax.minorticks_off()
        ax.set_xlabel(short(key))
        ax.legend(fontsize="x-small", frameon=False)
    axes[0].set_ylabel("final error (%)")
    axes[0].set_ylim(bottom=0)
    return fig


def caption(key: str, on: str | None) -> str:
    chosen = f" Ringed: the value chosen on {on}." if on else ""
    return (f"Final validation error (solid) and test error (dashed) against {short(key)}: one panel per family, "
            f"one colour per depth, the mean over seeds with their min–max shaded.{chosen}")

