"""Figure of a `gradlab lesion` folder (Veit et al. 2016, Fig. 3), without torch.

Test error after deleting one unit, plain | ResNet panels with a shared log y: plain nets
per deleted layer (x: the layer's position among the net's weighted layers, 1 = the stem
conv) or per block when lesioned with ``--plain-unit block``, ResNets per deleted block
(1 = input side). One line per depth (mean over seeds), the intact net's error as a dashed
line of the same colour, chance as a grey dotted line. Open markers: ResNet blocks that
change the shape (downsampling, deleted through their shortcut); plain units that change
the shape have no identity to put there (gaps).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from gradlab import families as fam
from gradlab.analysis_dirs import Analysis
from gradlab.report.style import Style, depth_palette, new_figure
from gradlab.report.wording import pct

TABLES = {
    "lesion": ("family", "depth", "seed", "unit", "index", "layer", "changes_shape", "deleted", "test_err",
               "intact_err"),
    "runs": ("family", "depth", "intact_err", "num_classes", "test_size"),
}  # fmt: skip

X_LABELS = {
    "layer": "deleted layer (weighted layers in depth order, 1 = stem conv)",
    "block": "deleted block (1 = input side)",
}
POSITIONS = {
    "layer": "x: the layer's position among the net's weighted layers, 1 = the stem conv",
    "block": "x: the block's position, 1 = input side",
}
HOW = {  # (residual family, unit): how the unit is deleted (gradlab.analyses.lesion.deletions)
    (False, "layer"): "its conv, with the BN and ReLU that belong to it, replaced by the identity, possible only "
                      "where the layer keeps the shape (gaps: strided or channel-changing layers; the stem conv "
                      "and the classifier are never deleted)",
    (False, "block"): "replaced by the identity, possible only where it keeps the shape (gaps: downsampling "
                      "blocks)",
    (True, "block"): "its branch F(x) set to zero, which leaves its shortcut (open markers: downsampling "
                     "blocks, deleted through their projection or padding)",
}  # fmt: skip


def by_model(analysis: Analysis) -> pd.DataFrame:
    """Mean over seeds per (family, depth, unit, index): test_err, intact_err, changes_shape."""
    les = analysis.tables["lesion"]
    return (les.groupby(["family", "depth", "unit", "index"], as_index=False)
            .agg(layer=("layer", "first"), test_err=("test_err", "mean"), intact_err=("intact_err", "mean"),
                 changes_shape=("changes_shape", "any"), deleted=("deleted", "all")))  # fmt: skip


def _unit(data: pd.DataFrame, family: str) -> str:
    """The unit a family's panel shows (one per family in a `gradlab lesion` folder)."""
    units = list(dict.fromkeys(data.loc[data["family"] == family, "unit"]))
    return units[0] if len(units) == 1 else "/".join(units)


def _plural(unit: str) -> str:
    return "/".join(f"{u}s" for u in unit.split("/"))


def figure(analysis: Analysis, style: Style):
    data, runs = by_model(analysis), analysis.tables["runs"]
    families = fam.ordered(data["family"])
    palette = depth_palette(data["depth"])
    floor = pct(0.5 / max(int(runs["test_size"].max()), 1))  # where a zero error is drawn on log y
    chance = pct(1 - 1 / max(int(runs["num_classes"].max()), 1))
    fig = new_figure(style.full_width, style.panel_height * 1.45)
    axes = fig.subplots(1, len(families), sharey=True, squeeze=False)[0]
    w = style.rc.get("lines.linewidth", 1.0)
    for ax, family in zip(axes, families):
        rows = data[data["family"] == family]
        unit = _unit(data, family)
        for depth in sorted(rows["depth"].unique()):
            d = rows[rows["depth"] == depth].sort_values("index")
            color = palette[int(depth)]
            err = np.maximum(pct(d["test_err"].to_numpy(dtype=float)), floor)
            ax.plot(d["index"], err, color=color, lw=w, marker="." if len(d) <= 40 else None, ms=3 * w,
                    label=fam.label(family, int(depth)))  # fmt: skip
            down = d[d["changes_shape"] & d["deleted"]]
            ax.plot(down["index"], np.maximum(pct(down["test_err"].to_numpy(dtype=float)), floor), ls="none",
                    marker="o", ms=3.5 * w, mfc="white", mec=color, mew=0.8 * w)  # fmt: skip
            ax.axhline(max(pct(float(d["intact_err"].iloc[0])), floor), color=color, ls="--", lw=0.8 * w)
        first, last = int(rows["index"].min()), int(rows["index"].max())
        ax.set_xlim(first - 0.5, last + 0.5)  # also where nothing could be deleted (no finite point)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.axhline(chance, color="0.55", ls=":", lw=0.8 * w)
        ax.text(first, chance, "chance", fontsize="x-small", color="0.4", va="bottom")
        if not rows["deleted"].any():
            ax.text(0.5, 0.5, f"no {unit} keeps its shape:\nnothing could be deleted", transform=ax.transAxes,
                    ha="center", va="center", fontsize="small", color="0.3")  # fmt: skip
        ax.set_yscale("log")
        ax.set_title(f"{fam.get(family).panel_title}: one {unit} deleted")
        ax.set_xlabel(X_LABELS.get(unit, f"deleted {unit}"))
        ax.legend(loc="upper right" if fam.get(family).residual else "lower right", fontsize="x-small")
    axes[0].set_ylabel("test error (%)")
    axes[0].set_ylim(top=max(100.0, chance * 1.2))
    fig.suptitle(f"Deleting single {title_units(data)} of trained nets (lesion study, Veit et al. 2016)")
    return fig


def title_units(data: pd.DataFrame) -> str:
    """"layers (plain) and blocks (ResNet)", or just "blocks" when every panel deletes blocks."""
    units = {f: _unit(data, f) for f in fam.ordered(data["family"])}
    if len(set(units.values())) == 1:
        return _plural(next(iter(units.values())))
    return " and ".join(f"{_plural(u)} ({fam.get(f).title})" for f, u in units.items())


def title(analysis: Analysis) -> str:
    return f"Lesion study: deleting single {title_units(by_model(analysis))}"


def caption(analysis: Analysis) -> str:
    data = by_model(analysis)
    panels = []
    for family in fam.ordered(data["family"]):
        unit = _unit(data, family)
        how = HOW.get((fam.get(family).residual, unit), "deleted")
        where = POSITIONS.get(unit, f"x: the deleted {unit}")
        panel = fam.get(family).panel_title
        panels.append(f"{panel[:1].upper()}{panel[1:]}: one {unit} deleted at a time ({where}), {how}")
    return (
        "Test error after deleting one part of a trained net. " + "; ".join(panels) + ". Dashed lines: the intact "
        "net, dotted: chance. Mean over seeds; evaluation in eval mode with the trained BN statistics, as in "
        "Veit et al. (2016)."
    )


def sentences(analysis: Analysis) -> list[str]:
    data = by_model(analysis)
    out = []
    for family in fam.ordered(data["family"]):
        for depth in sorted(data.loc[data["family"] == family, "depth"].unique()):
            model = data[(data["family"] == family) & (data["depth"] == depth)]
            unit = _unit(model, family)
            label = f"Lesion {fam.label(family, int(depth))} (one {unit} at a time)"
            intact = f"test error {pct(model['intact_err'].iloc[0]):.1f}% intact"
            d = model[model["deleted"]]
            if d.empty:
                out.append(f"{label}: {intact}; no {unit} keeps its shape, so none was deleted.")
                continue
            worst = d.loc[d["test_err"].idxmax()]
            same = d[~d["changes_shape"]]
            typical = (f"median {pct(same['test_err'].median()):.1f}% over {len(same)} {_plural(unit)} that keep "
                       f"the shape" if len(same) else f"no same-shape {unit}")  # fmt: skip
            out.append(
                f"{label}: {intact}; deleting one {unit} gives {typical}, at worst {pct(worst['test_err']):.1f}% "
                f"({unit} {int(worst['index'])}, {worst['layer']}{', downsampling' if worst['changes_shape'] else ''})."
            )
    return out
