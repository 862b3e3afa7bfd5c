"""How gradlab writes model sizes: parameters as in Table 6 of He et al. 2015 (0.27M,
0.85M, 1.7M) and multiply-accumulates as in its Table 1. Used by `gradlab models` and by
the report's tables, so a model's size reads the same in both."""

from __future__ import annotations

__all__ = ["format_macs", "format_params"]


def format_params(n: int | None) -> str:
    """0.27M, 0.85M, 1.7M, 19.4M; K below 0.1M; "–" when unknown (0 or None)."""
    if not n:
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e5:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(n)


def format_macs(n: int) -> str:
    """41M, 253M, 1.8G, 11.5G."""
    if n >= 1e9:
        return f"{n / 1e9:.1f}G"
    if n >= 1e6:
        return f"{n / 1e6:.0f}M"
    if n >= 1e3:
        return f"{n / 1e3:.0f}K"
    return str(n)
