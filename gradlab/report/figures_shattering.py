"""Figure of a `gradlab analyze shattering` folder (Balduzzi et al. 2017), without torch.

(a) mean correlation between the gradients at two distinct inputs against depth, log y,
    with the predicted 2^-L (plain rectifier nets) and 1/sqrt(L) (resnets with BN);
(b) correlation between gradients at neighbouring inputs against depth;
(c) the gradient along the input line of a shallow and a deep net (the paper's Fig. 1).
Values are means over the nets (seeds) of the folder, with ± one standard error.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradlab import families as fam
from gradlab.analysis_dirs import Analysis
from gradlab.families import PLAIN, RESNET
from gradlab.report.style import Style, face, new_figure

TABLES = {
    "autocorr": ("family", "depth", "seed", "lag", "corr"),
    "pairs": ("family", "depth", "seed", "corr"),
    "gradients": ("family", "depth", "seed", "x", "grad"),
}
FAMILY_COLORS = {PLAIN: "C3", RESNET: "C0"}
NAMES = {PLAIN: "plain", RESNET: "residual"}
PREDICTED = {PLAIN: ("$2^{-L}$", lambda d: 2.0 ** -d), RESNET: (r"$1/\sqrt{L}$", lambda d: 1.0 / np.sqrt(d))}


def mean_sem(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error of "corr" over seeds, per family and depth."""
    g = frame.groupby(["family", "depth"])["corr"]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["sem"] = (out["std"] / np.sqrt(out["count"])).fillna(0.0)
    return out


def neighbour(analysis: Analysis) -> pd.DataFrame:
    a = analysis.tables["autocorr"]
    return mean_sem(a[a["lag"] == 1])


def figure(analysis: Analysis, style: Style):
    pairs, near = mean_sem(analysis.tables["pairs"]), neighbour(analysis)
    families = fam.ordered(pairs["family"])
    fig = new_figure(style.full_width, style.panel_height * 1.35)
    ax_pairs, ax_near, ax_grad = fig.subplots(1, 3)
    w = style.rc.get("lines.linewidth", 1.0)
    depths = np.arange(1, int(pairs["depth"].max()) + 1)
    batch_norm = analysis.settings.get("batch_norm", True)
    for family in families:
        style_kw = dict(color=FAMILY_COLORS[family], marker=fam.get(family).marker, ms=2.5 * w,
                        mfc=face(family, FAMILY_COLORS[family]), lw=w)  # fmt: skip
        p = pairs[pairs["family"] == family].sort_values("depth")
        shown = p[p["mean"] > 2 * p["sem"]]  # the rest cannot be told from zero
        ax_pairs.errorbar(shown["depth"], shown["mean"], yerr=shown["sem"], ls="none", capsize=0,
                          label=f"{NAMES[family]} (measured)", **style_kw)  # fmt: skip
        if family == PLAIN or batch_norm:
            text, rate = PREDICTED[family]
            ax_pairs.plot(depths, rate(depths), color=FAMILY_COLORS[family], lw=0.8 * w,
                          ls=fam.get(family).linestyle, label=f"{text} (predicted)")  # fmt: skip
        n = near[near["family"] == family].sort_values("depth")
        ax_near.plot(n["depth"], n["mean"], ls=fam.get(family).linestyle, label=NAMES[family],
                     markevery=_markevery(len(n)), **style_kw)  # fmt: skip
        ax_near.fill_between(n["depth"], n["mean"] - n["sem"], n["mean"] + n["sem"],
                             color=FAMILY_COLORS[family], alpha=0.2, lw=0)  # fmt: skip
    ax_pairs.set_yscale("log")
    ax_pairs.set_ylim(bottom=max(1e-4, ax_pairs.get_ylim()[0]), top=1.5)
    ax_pairs.set_xlabel("depth $L$")
    ax_pairs.set_ylabel("correlation")
    ax_pairs.set_title("(a) gradients at two inputs")
    ax_pairs.legend(loc="lower left", fontsize="x-small")
    ax_near.axhline(0, color="0.6", lw=0.5 * w)
    ax_near.set_ylim(min(-0.1, ax_near.get_ylim()[0]), 1.05)
    ax_near.set_xlabel("depth $L$")
    ax_near.set_ylabel("correlation")
    ax_near.set_title("(b) at neighbouring inputs")
    ax_near.legend(loc="lower left")
    _gradients_panel(ax_grad, analysis.tables["gradients"], w)
    fig.suptitle("Shattered gradients at initialization (Balduzzi et al. 2017)")
    return fig


def _markevery(n: int) -> int:
    return max(1, math.ceil(n / 12))


def _gradients_panel(ax, grads: pd.DataFrame, w: float) -> None:
    """Each example gradient scaled to unit RMS and stacked: the deepest at the top."""
    examples = _examples(grads)
    for k, (family, depth) in enumerate(examples):
        d = grads[(grads["family"] == family) & (grads["depth"] == depth)].sort_values("x")
        g = d["grad"].to_numpy(dtype=float)
        rms = float(np.sqrt(np.mean(g * g))) or 1.0
        offset = 4.0 * k
        ax.plot(d["x"], g / rms + offset, color=FAMILY_COLORS[family], lw=0.6 * w)
        label = f"depth {depth}" if depth == 1 else f"{NAMES[family]}, depth {depth}"
        ax.text(d["x"].min(), offset + 1.6, label, fontsize="x-small", va="bottom")
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    ax.set_xlabel("input $x$")
    ax.set_title("(c) $df/dx$ along the line")


def _examples(grads: pd.DataFrame) -> list[tuple[str, int]]:
    """(family, depth) to draw: the shallowest once (plain and residual nets coincide at
    depth 1), then the deepest of each family."""
    if grads.empty:
        return []
    lo, hi = int(grads["depth"].min()), int(grads["depth"].max())
    out = [(PLAIN if (grads["family"] == PLAIN).any() else RESNET, lo)]
    if hi > lo:
        out += [(f, hi) for f in fam.ordered(grads["family"])]
    return out


def title(analysis: Analysis) -> str:
    return "Shattered gradients at initialization"


def caption(analysis: Analysis) -> str:
    s = analysis.settings
    bn = "with batch normalization" if s.get("batch_norm", True) else "without normalization"
    text = (
        f"Input-gradients df/dx of fully-connected rectifier nets (width {s.get('width')}, {bn}, He init) "
        f"over {s.get('points')} inputs on [{s.get('low')}, {s.get('high')}], mean ± s.e. over "
        f"{s.get('seeds')} nets; residual nets are pre-activation twins of the plain ones with the same "
        f"weights. (a) Mean correlation between gradients at two distinct inputs; lines: the decay rates "
        f"Balduzzi et al. (2017) predict, 2^-L for plain rectifier nets"
    )
    text += " and 1/√L for resnets with batch normalization" if s.get("batch_norm", True) else ""
    text += ("; points that cannot be told from zero (mean < 2 s.e.) are not drawn. (b) Correlation "
             "between gradients at neighbouring inputs. (c) The gradient along the line, scaled to unit RMS, "
             "for the shallowest and the deepest nets (seed 0): brown noise becomes white noise in deep "
             "plain nets.")
    return text


def sentences(analysis: Analysis) -> list[str]:
    pairs, near = mean_sem(analysis.tables["pairs"]), neighbour(analysis)
    deepest = int(near["depth"].max())

    def at(frame, family, depth):
        row = frame[(frame["family"] == family) & (frame["depth"] == depth)]
        return float(row["mean"].iloc[0]) if len(row) else float("nan")

    out = [
        f"Shattered gradients: at depth {deepest}, gradients at neighbouring inputs correlate "
        f"{at(near, PLAIN, deepest):.2f} in plain nets and {at(near, RESNET, deepest):.2f} in residual nets "
        f"(1.00 means a smooth gradient, 0 white noise)."
    ]
    shallow = [d for d in (2, 3, 4) if d <= deepest]
    if shallow:
        measured = ", ".join(f"{at(pairs, PLAIN, d):.3f}" for d in shallow)
        predicted = ", ".join(f"{2.0 ** -d:.3f}" for d in shallow)
        out.append(f"Mean gradient correlation between two inputs in plain nets of depth "
                   f"{', '.join(map(str, shallow))}: {measured} (predicted 2^-L: {predicted}).")  # fmt: skip
    return out
