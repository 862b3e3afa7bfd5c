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


def finals_figure(models: pd.DataFrame, palette: dict, style: Style, notes: dict | None = None):
    """Final training and test error against depth, plain vs ResNet (errorbars: std over seeds).

    Models with an unfinished run (keys of `notes`) are crossed out. With more than two
    families, each family's points are shifted a little along depth so none hides another.
    """
    notes = notes or {}
    families = fam.ordered(models["family"])
    wide = len(families) > 2
    fig = new_figure(style.full_width if wide else style.single_width, style.panel_height * (1.6 if wide else 1.3))
    axes = fig.subplots(1, 2, sharey=True)
    depths = sorted(models["depth"].unique())
    w = style.rc.get("lines.linewidth", 1.0)
    for ax, which, title in zip(axes, ("train", "test"), ("training error", "test error")):
        for k, family in enumerate(families):
            sub = models[models["family"] == family].sort_values("depth")
            shift = 1.06 ** (k - (len(families) - 1) / 2) if wide else 1.0  # a log axis: a factor
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
        ax.set_title(title)
        if min(depths) > 0:
            ax.set_xscale("log")
        ax.set_xticks(depths)
        ax.set_xticklabels([str(d) for d in depths])
        ax.minorticks_off()
        lo, hi = min(depths), max(depths)
        if min(depths) > 0:
            ax.set_xlim(lo / (1.4 if wide else 1.25), hi * (1.4 if wide else 1.25))
        ax.set_xlabel("depth (layers)")
    axes[0].set_ylabel("final error (%)")
    axes[0].set_ylim(bottom=0)
    handles = [
        Line2D(
            [],
            [],
            color="0.35",
            ls=fam.get(f).linestyle,
            marker=fam.get(f).marker,
            mfc=face(f, "0.35"),
            mec="0.35",
            lw=0.9 * w,
            ms=4.5 * w,
            label=fam.get(f).title + (f" ({fam.get(f).variant})" if fam.get(f).variant else ""),
        )  # fmt: skip
        for f in families
        if fam.get(f).with_depth  # (runs of someone's own model are named in the table)
    ]
    if any((f, int(d)) in notes for f, d in zip(models["family"], models["depth"])):
        handles.append(Line2D([], [], ls="none", marker="x", color="0.15", ms=6 * w, mew=1.0 * w, label="not finished"))
    axes[1].legend(handles=handles, loc="best", fontsize="x-small" if wide else None)
    return fig


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
