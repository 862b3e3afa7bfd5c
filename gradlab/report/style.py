"""Looks shared by every report figure: themes, the depth palette, sizes, labels.

A theme is applied through `theme(style)`, a context manager around
`matplotlib.rc_context`, so building a report never changes the caller's global
matplotlib state. Figures are made with `matplotlib.figure.Figure` (no pyplot), so no
backend is selected and no figure registry is touched; PNG/PDF are rendered by Agg.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import matplotlib as mpl
import seaborn as sns

from gradlab import families
from gradlab.errors import ReportError
from gradlab.report.layer_numbering import TIED

PAPER, NOTEBOOK = "paper", "notebook"
STYLES = (PAPER, NOTEBOOK)

# seaborn "colorblind" (Okabe-Ito-like), with its yellow moved last: poor on white
_COLORS = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#949494", "#56b4e9", "#fbafe4", "#ece133"]
HEATMAP_CMAP = "viridis"  # perceptually uniform, colour-blind safe


@dataclass(frozen=True)
class Style:
    """Sizes in inches and the matplotlib rc of one look."""

    name: str
    single_width: float  # one column of a two-column paper
    full_width: float  # the whole text width
    panel_height: float  # height of one row of panels
    dpi: int  # raster output (PNG)
    rc: dict = field(default_factory=dict, hash=False)


def _rc(context: str, font: float, small: float, line: float) -> dict:
    rc = {**sns.axes_style("ticks"), **sns.plotting_context(context)}
    rc.update(
        {
            # embedded TrueType (Type 42) fonts: editable in Illustrator, accepted by
            # publishers that reject Type 3
            "pdf.fonttype": 42,
            "ps.fonttype": 42,
            "font.family": ["sans-serif"],
            "font.sans-serif": ["DejaVu Sans", "Arial", "Liberation Sans", "sans-serif"],
            "mathtext.fontset": "dejavusans",
            "font.size": font,
            "axes.labelsize": font,
            "axes.titlesize": font,
            "figure.titlesize": font + 1,
            "xtick.labelsize": small,
            "ytick.labelsize": small,
            "legend.fontsize": small,
            "legend.title_fontsize": small,
            "legend.frameon": False,
            "lines.linewidth": line,
            "axes.linewidth": 0.6 * line + 0.2,
            "xtick.major.width": 0.6 * line + 0.2,
            "ytick.major.width": 0.6 * line + 0.2,
            "xtick.major.size": 2.5 * line,
            "ytick.major.size": 2.5 * line,
            "xtick.minor.size": 1.5 * line,
            "ytick.minor.size": 1.5 * line,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.prop_cycle": mpl.cycler(color=_COLORS),
            "image.cmap": HEATMAP_CMAP,
            # constrained layout keeps the figure exactly the size asked for (a
            # bbox="tight" save would change the printed width)
            "figure.constrained_layout.use": True,
            "savefig.bbox": None,
            "savefig.facecolor": "white",
            "figure.facecolor": "white",
        }
    )
    return rc


STYLE_TABLE = {
    PAPER: Style(PAPER, single_width=3.3, full_width=6.8, panel_height=1.8, dpi=300, rc=_rc("paper", 8, 7, 1.0)),
    NOTEBOOK: Style(
        NOTEBOOK, single_width=6.0, full_width=12.0, panel_height=3.2, dpi=200, rc=_rc("notebook", 13, 11, 1.6)
    ),
}


def get_style(name: str | Style) -> Style:
    if isinstance(name, Style):
        return name
    try:
        return STYLE_TABLE[name]
    except KeyError:
        raise ReportError(f"unknown report style {name!r}; choose one of: {', '.join(STYLES)}") from None


@contextmanager
def theme(style: str | Style) -> Iterator[Style]:
    """Apply a style's rc for the duration of the block; the global rc is restored after."""
    style = get_style(style)
    with mpl.rc_context(style.rc):
        yield style


def depth_palette(depths: Iterable[int]) -> dict[int, str]:
    """One colour per depth, by sorted depth, so a depth has the same colour in every figure."""
    ordered = sorted({int(d) for d in depths})
    return {d: _COLORS[i % len(_COLORS)] for i, d in enumerate(ordered)}


WIDE = 3  # families side by side at most; with more, a figure gives each family a row


def family_rows(families: list[str]) -> bool:
    """Whether a figure with a column per family turns into a row per family (more than WIDE)."""
    return len(families) > WIDE


def panel_grid(n: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels, at most WIDE columns."""
    cols = min(max(n, 1), WIDE)
    return -(-max(n, 1) // cols), cols


def legend_label(family: str, depth: int, notes: dict) -> str:
    """A model's label ("ResNet-56"), with what happened to it if it did not finish."""
    note = notes.get((family, depth), "")
    return families.label(family, depth) + (f" ({note})" if note else "")


def face(family: str, color: str) -> str:
    """Marker face colour: the family's colour, or white for open markers (plain nets)."""
    return color if families.get(family).filled else "white"


def new_figure(width: float, height: float):
    """A Figure not registered with pyplot (no backend state, freed when dropped)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def iteration_axis(ax, max_step: float) -> None:
    """Label the x axis in iterations, scaled like the paper's "iter. (1e4)"."""
    from matplotlib.ticker import FuncFormatter

    for power in (4, 3):
        scale = 10**power
        if max_step >= 2 * scale:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos, s=scale: f"{x / s:g}"))
            ax.set_xlabel(f"iter. (1e{power})")
            return
    ax.set_xlabel("iter.")


def nice_ceiling(value: float) -> float:
    """The next "round" number above value (1, 2, 2.5, 5 × 10^k)."""
    import math

    if not math.isfinite(value) or value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * 10**exp >= value:
            return m * 10**exp
    return 10 ** (exp + 1)


LABEL_PITCH = 1.5  # a tick label needs this many times its font size (in points) along the axis
SHORT_NAME = 16  # characters of a layer name on an axis at most


def short_layer_name(name: str) -> str:
    """A layer's name short enough for a tick label: the parts that carry a number (blocks,
    stages) and the last one, without "weight" ("encoder.layers.0.self_attn.in_proj_weight"
    -> "0.in_proj", "layer2.1.conv1.weight" -> "layer2.1.conv1"); each name of a tied
    tensor so ("transformer.wte = lm_head" -> "wte = lm_head")."""
    if TIED in name:
        return TIED.join(short_layer_name(part) for part in name.split(TIED))
    for suffix in (".weight", "_weight"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    parts = name.split(".")
    kept = [p for p in parts[:-1] if any(ch.isdigit() for ch in p)] + parts[-1:]
    short = ".".join(kept)
    short = short if any(ch.isalpha() for ch in short) else name  # "blocks.0.1", not "0.1"
    return short if len(short) <= SHORT_NAME else "…" + short[-(SHORT_NAME - 1):]


def layer_axis(axis, positions, names: dict | None, length_in: float, fontsize: float) -> None:
    """Integer ticks on a layer axis (matplotlib XAxis or YAxis); with ``names`` (position ->
    layer name, one name per position), the layers' short names, every n-th where not all
    fit in ``length_in`` inches at ``fontsize`` points."""
    from matplotlib.ticker import FixedLocator, MaxNLocator, NullFormatter

    positions = sorted({int(p) for p in positions})
    if not positions:
        return
    if not names:
        axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        return
    fit = max(1, int(length_in * 72 / (LABEL_PITCH * fontsize)))
    gap = (positions[-1] - positions[0] + 1) / fit  # the least distance between two labels
    ticks = [positions[0]]
    for p in positions[1:]:
        if p - ticks[-1] >= gap:
            ticks.append(p)
    if ticks[-1] != positions[-1] and len(ticks) > 1 and positions[-1] - ticks[-2] >= gap:
        ticks[-1] = positions[-1]  # the output end (the classifier) named rather than the one before it
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_minor_locator(FixedLocator(positions if len(ticks) < len(positions) else []))
    axis.set_minor_formatter(NullFormatter())
    vertical = axis.axis_name == "x"
    axis.set_ticks(ticks, [short_layer_name(names[p]) if p in names else str(p) for p in ticks],
                   rotation=90 if vertical else 0, fontsize=fontsize)


def font_points(size, default: float = 8.0) -> float:
    """A matplotlib font size (points, or a name such as "small") in points."""
    from matplotlib.font_manager import FontProperties

    try:
        return float(FontProperties(size=size).get_size_in_points())
    except (TypeError, ValueError):
        return default
