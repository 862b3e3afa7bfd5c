"""Figure of a `gradlab analyze spp` folder: signal propagation plots (Brock et al. 2021).

Rows: average channel squared mean, average channel variance (block outputs) and the
residual branch's average channel variance (before the addition); columns: plain | ResNet;
one line per depth along the block index. Reads the folder's "by_model" table.
"""

from __future__ import annotations

from gradlab import families as fam
from gradlab.analysis_dirs import Analysis
from gradlab.families import PLAIN, RESNET
from gradlab.report.figures_flow import depth_panels
from gradlab.report.style import Style, depth_palette, new_figure
from gradlab.report.wording import fmt_std

# stat names as written by gradlab.analyses.spp (the report does not import torch code)
SQ_MEAN, VAR, BRANCH_VAR = "avg_channel_sq_mean", "avg_channel_var", "branch_avg_channel_var"
STAT_LABELS = {SQ_MEAN: "avg. channel\nsquared mean", VAR: "avg. channel\nvariance",
               BRANCH_VAR: "residual avg.\nchannel variance"}  # fmt: skip
TABLES = {"by_model": ("family", "depth", "block", "stage", "stat", "value")}


def figure(analysis: Analysis, style: Style):
    """Three rows of SPP curves, plain and ResNet side by side with a shared y per row."""
    data = analysis.tables["by_model"]
    stats = [s for s in (SQ_MEAN, VAR, BRANCH_VAR) if (data["stat"] == s).any()]
    families = fam.ordered(data["family"])
    palette = depth_palette(data["depth"])
    fig = new_figure(style.full_width, style.panel_height * (0.35 + 0.9 * len(stats)))
    axes = fig.subplots(len(stats), len(families), sharex="col", sharey="row", squeeze=False)
    depth_panels(axes, data, stats, families, palette, fam.label, style, x="block",
                 xlabel="residual block (1 = input side)", ylabels=STAT_LABELS, log=False)
    for r, stat in enumerate(stats):
        top = data.loc[data["stat"] == stat, "value"].max()
        axes[r, 0].set_ylim(0, 1.08 * top if top > 0 else 1.0)  # from 0: growth reads as a slope
    fig.suptitle(f"Signal propagation at initialization ({_context(analysis)})")
    return fig


def _context(analysis: Analysis) -> str:
    s = analysis.settings
    inputs = s.get("inputs", "?")
    what = "N(0, 1) inputs" if inputs == "gaussian" else f"real {s.get('dataset', '?')} inputs"
    if inputs == "gaussian" and s.get("dataset"):
        what += f" shaped like {s['dataset']}"
    seeds = len(s.get("seeds", [])) or "?"
    zero = ", zero-init residual" if s.get("zero_init_residual") else ""
    zero += f", {s['variant']}" if s.get("variant") else ""
    return f"{what}, batch {s.get('batch_size', '?')}, {seeds} seed{'s' if seeds != 1 else ''}{zero}"


def title(analysis: Analysis) -> str:
    return f"Signal propagation plots ({_context(analysis)})"


def caption(analysis: Analysis) -> str:
    return ("Signal propagation plots (Brock et al. 2021) of freshly initialized nets in training mode: at each "
            "residual block output (after the addition and ReLU), the squared mean of each channel over "
            "(N, H, W) averaged over channels (top) and the channel variance averaged over channels (middle); "
            "bottom: the variance of the residual branch F(x) before the addition. Plain twins have the same "
            "blocks without the addition. Mean over seeds.")


def sentences(analysis: Analysis) -> list[str]:
    """Block-output variance at the last block, and its growth over the first stage, for the
    deepest depth both families have."""
    data = analysis.tables["by_model"]
    shared = set(data.loc[data["family"] == PLAIN, "depth"]) & set(data.loc[data["family"] == RESNET, "depth"])
    if not shared:
        return []
    depth = int(max(shared))
    parts = []
    for family in (PLAIN, RESNET):
        d = data[(data["family"] == family) & (data["depth"] == depth) & (data["stat"] == VAR) & (data["stage"] == 1)]
        d = d.sort_values("block")
        if len(d) >= 2:
            first, last = fmt_std(d["value"].iloc[0]), fmt_std(d["value"].iloc[-1])
            parts.append(f"{first} → {last} in {fam.label(family, depth)}")
    if not parts:
        return []
    return [f"Over the first stage ({_context(analysis)}), the average channel variance of block outputs goes "
            f"{' vs '.join(parts)}."]  # fmt: skip
