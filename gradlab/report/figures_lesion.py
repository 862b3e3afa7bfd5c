"""Figure of a `gradlab lesion` folder (Veit et al. 2016, Fig. 3), without torch.

Test error after deleting one block (x: the block, 1 = input side), plain | ResNet panels
with a shared log y; one line per depth (mean over seeds), the intact net's error as a
dashed line of the same colour, chance as a grey dotted line. Open markers: blocks that
change the shape (downsampling); plain nets have no identity to put there (a gap).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlab.analysis_dirs import Analysis
from gradlab.report.figures_curves import _families
from gradlab.report.style import Style, depth_palette, model_label, new_figure, panel_title, pct

TABLES = {
    "lesion": ("family", "depth", "seed", "block_index", "changes_shape", "deleted", "test_err", "intact_err"),
    "runs": ("family", "depth", "intact_err", "num_classes", "test_size"),
}


def by_model(analysis: Analysis) -> pd.DataFrame:
    """Mean over seeds per (family, depth, block): test_err, intact_err, changes_shape."""
    les = analysis.tables["lesion"]
    return (les.groupby(["family", "depth", "block_index"], as_index=False)
            .agg(test_err=("test_err", "mean"), intact_err=("intact_err", "mean"),
                 changes_shape=("changes_shape", "any"), deleted=("deleted", "all")))  # fmt: skip


def figure(analysis: Analysis, style: Style):
    data, runs = by_model(analysis), analysis.tables["runs"]
    families = _families(data)
    palette = depth_palette(data["depth"])
    floor = pct(0.5 / max(int(runs["test_size"].max()), 1))  # where a zero error is drawn on log y
    chance = pct(1 - 1 / max(int(runs["num_classes"].max()), 1))
    fig = new_figure(style.full_width, style.panel_height * 1.45)
    axes = fig.subplots(1, len(families), sharey=True, squeeze=False)[0]
    w = style.rc.get("lines.linewidth", 1.0)
    for ax, family in zip(axes, families):
        fam = data[data["family"] == family]
        for depth in sorted(fam["depth"].unique()):
            d = fam[fam["depth"] == depth].sort_values("block_index")
            color = palette[int(depth)]
            err = np.maximum(pct(d["test_err"].to_numpy(dtype=float)), floor)
            ax.plot(d["block_index"], err, color=color, lw=w, marker="." if len(d) <= 40 else None, ms=3 * w,
                    label=model_label(family, int(depth)))  # fmt: skip
            down = d[d["changes_shape"] & d["deleted"]]
            ax.plot(down["block_index"], np.maximum(pct(down["test_err"].to_numpy(dtype=float)), floor), ls="none",
                    marker="o", ms=3.5 * w, mfc="white", mec=color, mew=0.8 * w)  # fmt: skip
            ax.axhline(max(pct(float(d["intact_err"].iloc[0])), floor), color=color, ls="--", lw=0.8 * w)
        ax.axhline(chance, color="0.55", ls=":", lw=0.8 * w)
        ax.text(1, chance, "chance", fontsize="x-small", color="0.4", va="bottom")
        ax.set_yscale("log")
        ax.set_title(panel_title(family))
        ax.set_xlabel("deleted block (1 = input side)")
        ax.legend(loc="upper right" if family != "plain" else "lower right", fontsize="x-small")
    axes[0].set_ylabel("test error (%)")
    axes[0].set_ylim(top=max(100.0, chance * 1.2))
    fig.suptitle("Deleting single blocks of trained nets (lesion study, Veit et al. 2016)")
    return fig


def title(analysis: Analysis) -> str:
    return "Lesion study: deleting single blocks"


def caption(analysis: Analysis) -> str:
    return (
        "Test error after deleting one block of a trained net, by the block's position (1 = input side); "
        "dashed lines: the intact net, dotted: chance. A residual block is deleted by setting its branch F(x) "
        "to zero, which leaves its shortcut; a plain block is replaced by the identity, possible only where it "
        "keeps the shape (open markers: downsampling blocks, deleted through their shortcut in ResNets, gaps "
        "in plain nets). Mean over seeds; evaluation in eval mode with the trained BN statistics, as in "
        "Veit et al. (2016)."
    )


def sentences(analysis: Analysis) -> list[str]:
    data = by_model(analysis)
    out = []
    for family in _families(data):
        for depth in sorted(data.loc[data["family"] == family, "depth"].unique()):
            d = data[(data["family"] == family) & (data["depth"] == depth) & data["deleted"]]
            if d.empty:
                continue
            worst = d.loc[d["test_err"].idxmax()]
            same = d[~d["changes_shape"]]
            typical = f"median {pct(same['test_err'].median()):.1f}%" if len(same) else "no same-shape block"
            out.append(
                f"Lesion {model_label(family, int(depth))}: test error {pct(d['intact_err'].iloc[0]):.1f}% intact; "
                f"deleting one block gives {typical}, at worst {pct(worst['test_err']):.1f}% (block "
                f"{int(worst['block_index'])}{', downsampling' if worst['changes_shape'] else ''})."
            )
    return out
