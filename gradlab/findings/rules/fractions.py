"""What the rules on a per-layer fraction share (dead_units, saturation): the layers whose
fraction reaches the warning line at some step, from when, and their worst values."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class OverLine:
    layers: list[str]  # in depth order
    first_step: int
    last_step: int
    worst: pd.Series  # layer -> its largest fraction, largest first


def over_line(view, stat: str, line: float) -> OverLine | None:
    """The layers (any role) whose ``stat`` reaches ``line`` at a recorded step, or None."""
    table = view.table(stat, main_path=False)
    if table.empty:
        return None
    over = table >= line
    cols = [c for c in table.columns if over[c].any()]
    if not cols:
        return None
    first = int(over[cols].any(axis=1).idxmax())
    return OverLine(cols, first, int(table.index[-1]), table[cols].max().sort_values(ascending=False))
