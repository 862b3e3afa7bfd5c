"""Fig. 6 of He et al. 2015 (training curves) and final error against depth."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from gradlab import families as fam
from gradlab.report.style import Style, face, iteration_axis, legend_label, new_figure, nice_ceiling, panel_grid
from gradlab.report.wording import pct


def curves_figure(curves: pd.DataFrame, palette: dict, notes: dict, style: Style):
    """Training error (dashed) and test error (solid, bold) vs iterations, one panel per family.

    Several seeds of one model: the mean at each evaluation, with the test-error
    min–max over seeds shaded.
    """
    families = fam.ordered(curves["family"])
    nrows, ncols = panel_grid(len(families))
    fig = new_figure(style.full_width, style.panel_height * (0.35 + nrows))
    grid = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    axes = grid.ravel()
    for ax in axes[len(families):]:
        ax.set_visible(False)
    max_step = float(curves["step"].max()) if len(curves) else 0.0
    # scale y to the errors after the first 10 % of training, as the paper crops at 20 %
    late = curves[curves["step"] >= 0.1 * max_step]
    top = np.nanmax(late[["train_err", "test_err"]].to_numpy(dtype=float)) if len(late) else np.nan
    top = min(100.0, nice_ceiling(1.15 * pct(top))) if np.isfinite(top) else 100.0
    w = style.rc.get("lines.linewidth", 1.0)
    for ax, family in zip(axes, families):
        sub = curves[curves["family"] == family]
        handles = []
        for depth in sorted(sub["depth"].unique()):
            d = sub[sub["depth"] == depth]
            color = palette[int(depth)]
            g = d.groupby("step", sort=True)
            train = g["train_err"].mean().dropna()
            test = g["test_err"].mean().dropna()
            ax.plot(train.index, pct(train.to_numpy()), ls="--", lw=0.8 * w, color=color)
            ax.plot(test.index, pct(test.to_numpy()), ls="-", lw=1.8 * w, color=color)
            if (family, int(depth)) in notes and len(test):  # where an unfinished run stopped
                ax.plot(
                    test.index[-1:],
                    pct(test.to_numpy()[-1:]),
                    ls="none",
                    marker="x",
                    ms=5 * w,
                    mew=1.2 * w,
                    color=color,
                )
            if d["seed"].nunique() > 1:
                lo, hi = g["test_err"].min().dropna(), g["test_err"].max().dropna()
                ax.fill_between(lo.index, pct(lo.to_numpy()), pct(hi.reindex(lo.index).to_numpy()),
                                color=color, alpha=0.2, lw=0)  # fmt: skip
            handles.append(Line2D([], [], color=color, lw=1.8 * w, label=legend_label(family, int(depth), notes)))
        handles += [
            Line2D([], [], color="0.3", ls="--", lw=0.8 * w, label="train"),
            Line2D([], [], color="0.3", ls="-", lw=1.8 * w, label="test"),
        ]
        ax.legend(handles=handles, loc="best", handlelength=1.8)
        ax.set_title(fam.get(family).panel_title)
        ax.set_xlim(0, max_step if max_step > 0 else 1)
        iteration_axis(ax, max_step)
    axes[0].set_ylim(0, top)
    for row in grid:
        row[0].set_ylabel("error (%)")
    return fig


def finals_figure(models: pd.DataFrame, palette: dict, style: Style, notes: dict | None = None, own=None):
    """Final training and test error (errorbars: std over seeds): zoo nets against depth,
    plain vs ResNet; models of someone's own loop (``own``: their family keys, runs of
    gradlab.watch, whose "depth" is only a count of layers; None: the families gradlab does
    not know) side by side, one colour and marker each, in a row of their own.

    Models with an unfinished run (keys of `notes`) are crossed out. With more than two
    families, each family's points are shifted a little along depth so none hides another.
    """
    notes = notes or {}
    own = {f for f in models["family"] if not fam.get(f).with_depth} if own is None else set(own)
    zoo, mine = models[~models["family"].isin(own)], models[models["family"].isin(own)]
    wide = len(fam.ordered(zoo["family"])) > 2 or len(mine) > 4
    nrows = int(not zoo.empty) + int(not mine.empty)
    fig = new_figure(style.full_width if wide else style.single_width, style.panel_height * (1.6 if wide else 1.3) * nrows)
    grid = fig.subplots(nrows, 2, sharey=True, squeeze=False)
    w = style.rc.get("lines.linewidth", 1.0)
    row = 0
    if not zoo.empty:
        _finals_by_depth(grid[row], zoo, palette, notes, w, wide)
        row += 1
    if not mine.empty:
        _finals_by_run(grid[row], mine, notes, w)
    for r, axes in enumerate(grid):
        axes[0].set_ylabel("final error (%)")
        for ax, title in zip(axes, ("training error", "test error")):
            ax.set_title(title if r == 0 else "")
    grid[0, 0].set_ylim(bottom=0)
    return fig


def _finals_by_depth(axes, models: pd.DataFrame, palette: dict, notes: dict, w: float, wide: bool) -> None:
    """Zoo models against depth (log x), a marker and line style per family, a colour per depth."""
    families = fam.ordered(models["family"])
    depths = sorted(models["depth"].unique())
    for ax, which in zip(axes, ("train", "test")):
        for k, family in enumerate(families):
            sub = models[models["family"] == family].sort_values("depth")
            shift = 1.06 ** (k - (len(families) - 1) / 2) if len(families) > 2 else 1.0  # a log axis: a factor
            x = sub["depth"].to_numpy(dtype=float) * shift
            y = pct(sub[f"{which}_mean"].to_numpy(dtype=float))
            err = pct(sub[f"{which}_std"].fillna(0).to_numpy(dtype=float))
            ax.plot(x, y, ls=fam.get(family).linestyle, color="0.35", lw=0.9 * w, zorder=1)
            for xi, yi, ei, d in zip(x, y, err, sub["depth"]):
                color = palette[int(d)]
                ax.errorbar(
                    xi, yi, yerr=ei if ei > 0 else None, fmt=fam.get(family).marker,
                    color=color, mfc=face(family, color), mec=color, ms=4.5 * w, capsize=2 * w,
                    lw=0.9 * w, zorder=3,
                )  # fmt: skip
                if (family, int(d)) in notes:
                    ax.plot(xi, yi, ls="none", marker="x", color="0.15", ms=6 * w, mew=1.0 * w, zorder=4)
        if min(depths) > 0:
            ax.set_xscale("log")
        ax.set_xticks(depths)
        ax.set_xticklabels([str(d) for d in depths])
        ax.minorticks_off()
        if min(depths) > 0:
            ax.set_xlim(min(depths) / (1.4 if wide else 1.25), max(depths) * (1.4 if wide else 1.25))
        ax.set_xlabel("depth (layers)")
    handles = [
        Line2D([], [], color="0.35", ls=fam.get(f).linestyle, marker=fam.get(f).marker, mfc=face(f, "0.35"),
               mec="0.35", lw=0.9 * w, ms=4.5 * w,
               label=fam.get(f).title + (f" ({fam.get(f).variant})" if fam.get(f).variant else ""))
        for f in families
    ]  # fmt: skip
    _unfinished_handle(handles, models, notes, w)
    axes[1].legend(handles=handles, loc="best", fontsize="x-small" if wide else None)


RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _finals_by_run(axes, models: pd.DataFrame, notes: dict, w: float) -> None:
    """Models of someone's own loop side by side (x: the model, not a depth), each in a
    colour and marker of its own, named on the axis and in the legend."""
    handles = []
    for ax, which in zip(axes, ("train", "test")):
        handles = []
        for i, m in enumerate(models.itertuples(index=False)):
            color, marker = f"C{i % 10}", RUN_MARKERS[i % len(RUN_MARKERS)]
            y, err = pct(getattr(m, f"{which}_mean")), pct(getattr(m, f"{which}_std"))
            ax.errorbar(i, y, yerr=err if np.isfinite(err) and err > 0 else None, fmt=marker, color=color,
                        ms=4.5 * w, capsize=2 * w, lw=0.9 * w, zorder=3)  # fmt: skip
            if (m.family, int(m.depth)) in notes:
                ax.plot(i, y, ls="none", marker="x", color="0.15", ms=6 * w, mew=1.0 * w, zorder=4)
            handles.append(Line2D([], [], ls="none", marker=marker, color=color, ms=4.5 * w, label=m.label))
        ax.set_xticks(range(len(models)), list(models["label"]), rotation=30 if len(models) > 2 else 0,
                      ha="right" if len(models) > 2 else "center")  # fmt: skip
        ax.set_xlim(-0.6, len(models) - 0.4)
        ax.set_xlabel("run")
    _unfinished_handle(handles, models, notes, w)
    axes[1].legend(handles=handles, loc="best")


def _unfinished_handle(handles: list, models: pd.DataFrame, notes: dict, w: float) -> None:
    if any((f, int(d)) in notes for f, d in zip(models["family"], models["depth"])):
        handles.append(Line2D([], [], ls="none", marker="x", color="0.15", ms=6 * w, mew=1.0 * w, label="not finished"))


SCALAR_PANELS = 6  # at most this many logged scalars get a panel (the first ones logged)


def scalars_figure(scalars: pd.DataFrame, style: Style):
    """The scalars runs of someone's own loop logged (``rec.log``) against the step: one
    panel per name, one line per run; a log y axis for positive values spanning over two
    decades (losses)."""
    names = list(dict.fromkeys(scalars["name"]))[:SCALAR_PANELS]
    nrows, ncols = panel_grid(len(names))
    fig = new_figure(style.full_width, style.panel_height * (0.3 + 1.05 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    runs = list(dict.fromkeys(scalars["run"]))
    firsts = scalars.drop_duplicates("run").set_index("run")
    seeds = firsts.groupby("label")["seed"].nunique()
    label = {r: firsts.loc[r, "label"] + (f" s{firsts.loc[r, 'seed']}" if seeds[firsts.loc[r, "label"]] > 1 else "")
             for r in runs}  # fmt: skip
    w = style.rc.get("lines.linewidth", 1.0)
    for ax, name in zip(axes.ravel(), names):
        d = scalars[scalars["name"] == name]
        for i, run in enumerate(runs):
            line = d[d["run"] == run].sort_values("step")
            if len(line):
                ax.plot(line["step"], line["value"], color=f"C{i % 10}", lw=w, label=label[run],
                        marker="." if len(line) <= 30 else None, ms=3 * w)  # fmt: skip
        v = d["value"].to_numpy(dtype=float)
        if (v > 0).all() and v.max() > 100 * v.min():
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    axes[0, 0].legend(loc="best")
    return fig
