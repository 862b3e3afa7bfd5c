"""Figure of a `gradlab analyze gradients` folder: gradient norms along depth at init.

Columns: plain | ResNet | first/last ratio against depth; rows: ‖∂L/∂W‖ and ‖∂L/∂h‖.
Reads the folder's "by_model" (geometric mean over seeds) and "ratios" tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlab import families as fam
from gradlab import stat_names as S
from gradlab.analysis_dirs import Analysis
from gradlab.families import PLAIN, RESNET
from gradlab.report.figures_flow import STAT_LABELS, depth_panels
from gradlab.report.style import Style, depth_palette, face, new_figure
from gradlab.report.wording import trend_word

# columns each table must have (checked before drawing; a folder lacking them is damaged)
TABLES = {
    "by_model": ("family", "depth", "stat", "position", "kind", "value"),
    "ratios": ("family", "depth", "stat", "ratio"),
}


def _stats(frame: pd.DataFrame) -> list[str]:
    return [s for s in (S.GRAD_NORM, S.ACT_GRAD_NORM) if (frame["stat"] == s).any()]


def figure(analysis: Analysis, style: Style):
    """Per-layer norms (log y, one line per depth) for each family, and first/last ratio
    against depth (log-log) in the last column; y shared along a row of norms."""
    by_model, ratios = analysis.tables["by_model"], analysis.tables["ratios"]
    stats = _stats(by_model)
    families = fam.ordered(by_model["family"])
    palette = depth_palette(by_model["depth"])
    fig = new_figure(style.full_width, style.panel_height * (0.35 + 1.05 * len(stats)))
    axes = fig.subplots(len(stats), len(families) + 1, squeeze=False)
    for r in range(len(stats)):
        for c in range(1, len(families)):
            axes[r, c].sharey(axes[r, 0])
    depth_panels(axes, by_model, stats, families, palette, fam.label, style)
    w = style.rc.get("lines.linewidth", 1.0)
    for r, stat in enumerate(stats):
        ax = axes[r, -1]
        rr = ratios[ratios["stat"] == stat]
        for family in fam.ordered(rr["family"]):
            line = rr[rr["family"] == family].sort_values("depth")
            look = fam.get(family)
            ax.plot(line["depth"], line["ratio"], color="0.15", lw=w, ls=look.linestyle, marker=look.marker,
                    ms=3.5 * w, mfc=face(family, "0.15"), label=look.title)  # fmt: skip
        ax.axhline(1.0, color="0.6", lw=0.6 * w, ls=":", zorder=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        depths = sorted(rr["depth"].unique()) if len(rr) else []
        if depths:
            ax.set_xticks(depths)
            ax.set_xticklabels([str(int(d)) for d in depths])
            ax.minorticks_off()
        ax.set_ylabel("first / last conv")
        if r == 0:
            ax.set_title("ratio vs depth")
            ax.legend(loc="best")
        if r == len(stats) - 1:
            ax.set_xlabel("depth")
    fig.suptitle(f"Gradient norms at initialization ({_context(analysis)})")
    return fig


def _context(analysis: Analysis) -> str:
    s = analysis.settings
    seeds = len(s.get("seeds", [])) or "?"
    variant = f", {s['variant']}" if s.get("variant") else ""
    return f"{s.get('dataset', '?')}, batch {s.get('batch_size', '?')}, {seeds} seed{'s' if seeds != 1 else ''}{variant}"


def title(analysis: Analysis) -> str:
    return f"Gradient norms at initialization ({_context(analysis)})"


def caption(analysis: Analysis) -> str:
    return ("Freshly initialized nets, one forward/backward of cross-entropy on a real batch in training mode "
            "(BatchNorm with batch statistics). Left: ‖∂L/∂W‖ of each main-path conv/fc weight (top) and "
            "‖∂L/∂h‖ at each conv output (bottom) along depth (layer 1 = first conv, last = classifier), log "
            "scale, geometric mean over seeds. Right: first conv layer / last conv layer against depth (log-log); "
            "> 1: gradients grow towards the input, 1 (dotted): no change. Missing points: norms beyond "
            "float32's range.")


def sentences(analysis: Analysis) -> list[str]:
    """For the deepest depth where both families have a finite ratio: how much each stat
    grows towards the input; and which models had non-finite norms (no ratio)."""
    ratios = analysis.tables["ratios"]
    out = []
    for stat in _stats(ratios) if len(ratios) else []:
        r = ratios[ratios["stat"] == stat]
        ok = r[np.isfinite(r["ratio"].to_numpy(dtype=float))]
        shared = set(ok.loc[ok["family"] == PLAIN, "depth"]) & set(ok.loc[ok["family"] == RESNET, "depth"])
        parts = []
        for family in fam.ordered(ok["family"]):
            pool = shared or set(ok.loc[ok["family"] == family, "depth"])
            d = ok[(ok["family"] == family) & (ok["depth"] == max(pool))]
            parts.append(f"{trend_word(float(d['ratio'].iloc[0]))} in {fam.label(family, int(d['depth'].iloc[0]))}")
        if parts:
            out.append(f"At initialization ({_context(analysis)}), {STAT_LABELS[stat]} from the last conv layer "
                       f"to the first {' and '.join(parts)}.")  # fmt: skip
        bad = r[~r.index.isin(ok.index)].sort_values(["family", "depth"])
        if len(bad):
            labels = ", ".join(fam.label(f, int(d)) for f, d in zip(bad["family"], bad["depth"]))
            out.append(f"{STAT_LABELS[stat]} was not finite at init (beyond float32's range) in {labels}: "
                       "no ratio there.")  # fmt: skip
    return out
