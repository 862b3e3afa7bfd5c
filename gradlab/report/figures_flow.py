"""Gradient flow along depth (per phase of training), activations along depth, and the
layer × step heatmap."""

from __future__ import annotations

from typing import Callable

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from gradlab import families as fam
from gradlab import stat_names as S
from gradlab.report.layer_numbering import layer_name
from gradlab.report.line_groups import line_groups
from gradlab.report.style import HEATMAP_CMAP, Style, family_rows, font_points, layer_axis, legend_label, new_figure
from gradlab.report.wording import FLOW_STATS as STAT_LABELS

PHASE_TITLES = {"init": "at initialization", "early": "early in training", "end": "at the end of training"}
ACT_YLABELS = {"init": "output std,\nat init", "early": "output std,\nearly", "end": "output std,\nat the end"}
HEATMAP_ZERO, HEATMAP_NONFINITE = "white", "#d62728"  # colours outside the log scale: exact 0, NaN/inf


def flow_figure(flow_models: pd.DataFrame, phase: str, step_label: str, palette: dict, notes: dict, style: Style):
    """Rows: ||dL/dW|| and ||dL/dh||; columns: plain | ResNet; one line per depth; log y.

    y is shared along a row so plain and residual nets compare directly.
    """
    sub = flow_models[flow_models["phase"] == phase]
    stats = [s for s in (S.GRAD_NORM, S.ACT_GRAD_NORM) if (sub["stat"] == s).any()]
    families = fam.ordered(sub["family"])
    axes = panels(stats, families, style, 1.05, sharex="col")
    depth_panels(axes, sub, stats, families, palette, lambda family, depth: legend_label(family, depth, notes), style,
                 rows=family_rows(families))  # fmt: skip
    fig = axes[0, 0].figure
    fig.suptitle(f"Gradient flow {PHASE_TITLES.get(phase, phase)} ({step_label})")
    return fig


def activation_figure(acts_models: pd.DataFrame, palette: dict, notes: dict, style: Style):
    """Rows: init, early, end; columns: one per family; one line per depth of the std of
    each block's (or probe point's) output along depth; log y shared along a row."""
    phases = [p for p in PHASE_TITLES if (acts_models["stat"] == p).any()]
    families = fam.ordered(acts_models["family"])
    axes = panels(phases, families, style, 0.9, sharex="col")
    fig = axes[0, 0].figure
    ylabels = {p: ACT_YLABELS[p] for p in phases}
    depth_panels(axes, acts_models, phases, families, palette, lambda family, depth: legend_label(family, depth, notes),
                 style, xlabel="block or layer (1 = input side)", ylabels=ylabels, rows=family_rows(families),
                 by_kind=True)  # fmt: skip
    fig.suptitle("Activations along depth")
    return fig


def panels(rows: list, families: list[str], style: Style, height: float, **share):
    """Axes [row, family] for a figure of ``rows`` (statistics or phases) × ``families``,
    y shared along a row: a column per family, or, with more than WIDE families, a row per
    family (returned transposed, so that callers index it the same way)."""
    if not family_rows(families):
        fig = new_figure(style.full_width, style.panel_height * (0.35 + height * len(rows)))
        return fig.subplots(len(rows), len(families), sharey="row", squeeze=False, **share)
    fig = new_figure(style.full_width, style.panel_height * (0.35 + 0.8 * len(families)))
    axes = fig.subplots(len(families), len(rows), sharey="col", squeeze=False,
                        sharex=share.get("sharex") and "col")  # fmt: skip
    return axes.T


def depth_lines(ax, frame: pd.DataFrame, x: str, palette: dict, label: Callable[[int], str], w: float,
                looks: dict | None = None) -> None:
    """One line per depth of ``frame`` (value against column ``x``), in the depth's colour;
    dots on short lines (counting drawable points: a lone one would not show), shallow nets
    drawn on top. ``looks`` (gradlab.report.line_groups): a line per value of the frame's
    "line" column too (norm outputs apart from linear ones), in that value's style."""
    looks = looks or {}
    for depth in sorted(frame["depth"].unique()):
        d = frame[frame["depth"] == depth]
        for k, key in enumerate([key for key in looks if (d["line"] == key).any()] if looks else [None]):
            line = (d if key is None else d[d["line"] == key]).sort_values(x)
            short = line["value"].notna().sum() <= 30
            look = looks[key][1] if key is not None else {"ls": "-", "marker": "." if short else None}
            ax.plot(line[x], line["value"], color=palette[int(depth)], lw=w, ms=(2.5 if looks else 3) * w,
                    label=label(int(depth)) if k == 0 else "_", zorder=2 + 1 / (1 + depth), **look)  # fmt: skip


def depth_panels(axes, frame: pd.DataFrame, stats: list[str], families: list[str], palette: dict,
                 label: Callable[[str, int], str], style: Style, x: str = "position",
                 xlabel: str = "layer (1 = input side)", ylabels: dict | None = None, log: bool = True,
                 rows: bool = False, by_kind: bool = False) -> None:
    """Statistics along depth: axes[r, c] gets stat r of family c, one line per depth
    (value against column ``x``; ``by_kind``: and per kind of point or repeated layer,
    gradlab.report.line_groups), log y unless ``log``
    is False, titles on the top row and labels on the edges (``ylabels``: stat -> label;
    default: the gradient-flow ones); ``rows``: the axes are a row per family, given
    transposed (:func:`panels`). The layer axis has integer ticks, named by the layers
    where one model is drawn (every n-th name where not all fit)."""
    w = style.rc.get("lines.linewidth", 1.0)
    ylabels = STAT_LABELS if ylabels is None else ylabels
    frame, looks = line_groups(frame) if by_kind else (frame, {})
    for r, stat in enumerate(stats):
        for c, family in enumerate(families):
            ax = axes[r, c]
            d = frame[(frame["stat"] == stat) & (frame["family"] == family)]
            depth_lines(ax, d, x, palette, lambda depth, f=family: label(f, depth), w, looks)
            if log:
                ax.set_yscale("log")
                _note_zeros(ax, d)
            if r == 0:
                ax.set_title(fam.get(family).panel_title)
                if not (looks and d["depth"].nunique() == 1):  # one model: the title names it
                    ax.legend(loc="best", frameon=True, framealpha=0.85, edgecolor="none")
            if (c if rows else r) == (len(families) if rows else len(stats)) - 1:
                ax.set_xlabel(xlabel)
            if rows or c == 0:
                ax.set_ylabel(ylabels[stat])
    if looks:
        handles = [Line2D([], [], color="0.3", lw=w, ms=2.5 * w, label=text, **look) for text, look in looks.values()]
        axes[0, 0].figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5))
    for c, family in enumerate(families):  # after drawing: shared axes share their ticks
        d = frame[(frame["family"] == family) & frame["stat"].isin(stats)]
        columns = 1 if rows else len(families)
        layer_axis(axes[-1, c].xaxis, d[x], layer_names(d, x), 0.8 * style.full_width / columns, _tick_points())


def layer_names(frame: pd.DataFrame, x: str = "position") -> dict[int, str] | None:
    """position -> layer name where ``frame`` holds one model's layers (each position one
    name, the ".weight" of ∂W rows dropped); None where depths or names differ."""
    if "layer" not in frame or frame.empty or frame["depth"].nunique() != 1:
        return None
    pairs = frame[[x, "layer"]].dropna().astype({x: int, "layer": str})
    pairs = pairs.assign(layer=pairs["layer"].map(layer_name)).drop_duplicates()
    if pairs[x].duplicated().any():
        return None
    return dict(zip(pairs[x], pairs["layer"]))


def _tick_points() -> float:
    return font_points(mpl.rcParams["xtick.labelsize"])


def _note_zeros(ax, frame: pd.DataFrame) -> None:
    """Say in the panel how many layers of each depth are exactly 0 (zero-initialized
    branches, gates or classifiers block the gradient at step 0): a log axis drops them."""
    if "zero" not in frame or not frame["zero"].any():
        return
    counts = frame.groupby("depth")["zero"].agg(["sum", "size"])
    parts = [f"{int(z)} of {n}" for z, n in zip(counts["sum"], counts["size"]) if z]
    ax.text(0.03, 0.5, f"exactly 0, not drawn:\n{', '.join(parts)} layers", transform=ax.transAxes,
            fontsize="small", ha="left", va="center", color="0.3")


def heatmap_range(maps: list[tuple[dict, pd.DataFrame]]) -> tuple[float, float]:
    """A log colour range shared by every heatmap: 1st to 99th percentile of positive values."""
    values = np.concatenate([m.to_numpy(dtype=float).ravel() for _, m in maps]) if maps else np.array([])
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        return 1e-3, 1.0
    vmin, vmax = np.percentile(values, [1, 99])
    return float(vmin), float(max(vmax, vmin * 1.0001))


def heatmap_figure(maps: list[tuple[dict, pd.DataFrame]], style: Style, value_range=None, title: str = ""):
    """One panel per model: ||dL/dW|| by layer (y, input at the bottom) and recorded step (x).

    maps: (row with family, depth and optionally note, position × step frame), one per
    (family, depth): a run's own frame, or its seeds pooled (layer_frames.model_heatmaps,
    whose ``attrs["seeds"]`` the panel's title names).
    Rows are depths, columns families. Columns of an image are the recorded steps in
    order (the recording schedule is denser early); ticks show their step. One log colour
    scale (value_range) for all panels so runs compare directly.
    """
    families = fam.ordered(r["family"] for r, _ in maps)
    depths = sorted({int(r["depth"]) for r, _ in maps})
    by_family = family_rows(families)  # rows are families, columns depths
    shape = (len(families), len(depths)) if by_family else (len(depths), len(families))
    fig = new_figure(style.full_width, style.panel_height * (0.45 + 0.95 * shape[0]))
    axes = fig.subplots(*shape, squeeze=False)
    vmin, vmax = value_range or heatmap_range(maps)
    norm = LogNorm(vmin=vmin, vmax=vmax)
    cmap = mpl.colormaps[HEATMAP_CMAP].with_extremes(bad=HEATMAP_NONFINITE, under=HEATMAP_ZERO)
    cell = [(depths.index(int(row["depth"])), families.index(row["family"])) for row, _ in maps]
    cell = [(c, r) for r, c in cell] if by_family else cell
    used = set(cell)
    image, seen = None, set()
    for (row, m), (r, c) in zip(maps, cell):
        ax = axes[r, c]
        arr = heatmap_cells(m.to_numpy(dtype=float), vmin, vmax)
        seen |= {"zero"} if (arr < vmin).any() else set()
        seen |= {"non-finite"} if np.isnan(arr).any() else set()
        image = ax.imshow(arr, aspect="auto", origin="lower", interpolation="nearest", norm=norm, cmap=cmap,
                          extent=(-0.5, arr.shape[1] - 0.5, -0.5, arr.shape[0] - 0.5))  # fmt: skip
        names = m.attrs.get("names") or {}
        layer_axis(ax.yaxis, range(len(m.index)), {i: names.get(int(p), str(p)) for i, p in enumerate(m.index)},
                   0.8 * style.panel_height * 0.95, _tick_points())  # fmt: skip
        steps = list(m.columns)
        ticks = np.unique(np.linspace(0, len(steps) - 1, min(5, len(steps))).round().astype(int))
        ax.set_xticks(ticks)
        ax.set_xticklabels([_short_step(steps[t]) for t in ticks])
        label = fam.label(row["family"], int(row["depth"]))
        seeds = int(m.attrs.get("seeds", 1))
        label += f", {seeds} seeds" if seeds > 1 else ""
        ax.set_title(label + (f" ({row['note']})" if row.get("note") else ""))
        ax.set_ylabel("layer")
        if (r + 1, c) not in used:  # the lowest panel of its column
            ax.set_xlabel("step")
    for r in range(shape[0]):
        for c in range(shape[1]):
            if (r, c) not in used:
                axes[r, c].set_axis_off()
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.9, pad=0.01, aspect=30)
        bar.set_label(STAT_LABELS[S.GRAD_NORM])
    if seen:  # what the cells outside the colour scale mean
        fig.legend(handles=[Patch(facecolor=HEATMAP_ZERO if s == "zero" else HEATMAP_NONFINITE, edgecolor="0.3",
                                  lw=0.5, label="exactly 0" if s == "zero" else "non-finite (NaN, inf)")
                            for s in ("zero", "non-finite") if s in seen],
                   loc="outside lower right", ncols=2)  # fmt: skip
    if title:
        fig.suptitle(title)
    return fig


def heatmap_cells(arr: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Values for a log-scale image: finite positive values clipped into [vmin, vmax];
    exact zeros just below vmin (the colour map's "under" colour); non-finite and negative
    values NaN (its "bad" colour)."""
    arr = np.asarray(arr, dtype=float)
    good = np.isfinite(arr) & (arr > 0)
    out = np.where(good, np.clip(arr, vmin, vmax), np.nan)
    return np.where(arr == 0, vmin / 10, out)


def _short_step(step) -> str:
    step = int(step)
    if step >= 10_000:
        return f"{step / 1000:.0f}k"
    if step >= 1000:
        return f"{step / 1000:.1f}k".replace(".0k", "k")
    return str(step)
