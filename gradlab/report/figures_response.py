"""Fig. 7 of He et al. 2015: standard deviation of layer responses (BN outputs, before ReLU)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlab import families as fam
from gradlab.report.figures_flow import panels
from gradlab.report.style import Style, family_rows, legend_label


# stds spanning more than this factor get a log y axis: on a linear one, a plain net whose
# responses exploded (std in the thousands) flattens every other curve to the floor
LOG_SPAN = 100.0


def log_scale_for(values) -> bool:
    """Whether layer-response stds need a log axis (their positive values span > LOG_SPAN)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return bool(v.size) and float(v.max()) > LOG_SPAN * float(v.min())


def responses_figure(responses: pd.DataFrame, palette: dict, notes: dict, style: Style):
    """Top: responses in layer order; bottom: sorted by magnitude. Columns: plain | ResNet.

    Several seeds of one model: the mean std at each position (and at each rank).
    y is shared along each row so plain and residual nets compare directly; it is
    logarithmic when the stds span more than LOG_SPAN (see log_scale_for).
    """
    families = fam.ordered(responses["family"])
    axes = panels(["original", "sorted"], families, style, 1.1)
    fig = axes[0, 0].figure
    w = style.rc.get("lines.linewidth", 1.0)
    for c, family in enumerate(families):
        sub = responses[responses["family"] == family]
        for depth in sorted(sub["depth"].unique()):
            d = sub[sub["depth"] == depth]
            label = legend_label(family, int(depth), notes)
            color = palette[int(depth)]
            z = 2 + 1 / (1 + depth)  # shallower nets on top: their short lines would hide otherwise
            by_pos = d.groupby("position", sort=True)["value"].mean()
            by_rank = d.groupby("rank", sort=True)["value"].mean()
            axes[0, c].plot(by_pos.index, by_pos.to_numpy(), color=color, lw=w, label=label, zorder=z)
            axes[1, c].plot(by_rank.index, by_rank.to_numpy(), color=color, lw=w, label=label, zorder=z)
        axes[0, c].set_title(fam.get(family).panel_title)
        axes[0, c].set_xlabel("layer index (original)")
        axes[1, c].set_xlabel("layer index (sorted by magnitude)")
        axes[0, c].legend(loc="best")
    log = log_scale_for(responses["value"])
    for ax in axes[:, :1].ravel() if not family_rows(families) else axes.ravel():
        ax.set_ylabel("std (log scale)" if log else "std")
    right = float(responses["position"].max()) + 1 if len(responses) else 1.0
    for ax in axes.ravel():  # one x range everywhere so equal depths line up
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlim(0, right)
    return fig
