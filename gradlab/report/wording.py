"""How the report writes numbers: percent, pairs of errors, stds, ratios and trends along depth.

Shared by the summary, the tables and the figures' captions and sentences, so that a number
reads the same everywhere. Errors are stored as fractions and shown as percent.
"""

from __future__ import annotations

from gradlab import stat_names as S

# the gradient norms along depth, as figures and sentences name them
FLOW_STATS = {S.GRAD_NORM: "‖∂L/∂W‖", S.ACT_GRAD_NORM: "‖∂L/∂h‖"}
FLOW_FACTOR = 2.0  # gradient-flow ratios closer to 1 than this are "neither vanishing nor exploding"


def pct(fraction: float) -> float:
    """Errors are stored as fractions and shown as percent."""
    return 100.0 * fraction


def fmt_pair(a: float, b: float) -> tuple[str, str]:
    """Two errors as percent, with one decimal unless that would make them look equal."""
    for digits in (1, 2, 3):
        sa, sb = f"{pct(a):.{digits}f}%", f"{pct(b):.{digits}f}%"
        if sa != sb or a == b:
            return sa, sb
    return sa, sb


def fmt_pct(a: float) -> str:
    return f"{pct(a):.1f}%"


def fmt_std(x: float) -> str:
    return f"{x:.2f}" if abs(x) >= 0.01 else f"{x:.2g}"


def fmt_ratio(x: float) -> str:
    """0.0039, 0.58, 3.2, 45, 1,450, 5.7e+06."""
    if x >= 1e4 or 0 < x < 1e-3:
        return f"{x:.2g}"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.0f}"
    return f"{x:.2g}"


def trend_word(ratio: float) -> str:
    """How a gradient norm changes from the output side to the input side."""
    if ratio == 0:
        return "vanishes entirely (to 0 in float32, below about 1e-23 per element)"
    if ratio >= FLOW_FACTOR:
        return f"grows {fmt_ratio(ratio)}× (exploding towards the input)"
    if ratio <= 1 / FLOW_FACTOR:
        return f"shrinks {fmt_ratio(1 / ratio)}× (vanishing towards the input)"
    return f"changes {fmt_ratio(ratio)}× (within {FLOW_FACTOR:g}×: neither vanishing nor exploding)"
