"""Which points of an activation figure one line joins: outputs of one kind of layer, or,
where a model repeats a block, of one layer of the block ("encoder.layers.*.linear1").

A line through a transformer's outputs in depth order zigzags between LayerNorm and Linear
outputs (and between a block's two Linear layers), whose stds differ by design; a line per
repeated layer shows how each changes along depth instead.
"""

from __future__ import annotations

import re

import pandas as pd

KIND_NAMES = {"fc": "linear outputs", "norm": "norm outputs", "conv": "conv outputs", "bn": "BN outputs",
              "block": "block outputs", "act": "activation outputs", "other": "other outputs"}  # fmt: skip
LOOKS = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (1, 1)), "v"), ((0, (5, 1)), "P"), ((0, (3, 1, 1, 1)), "X")]
ONCE = "once"  # the line key of layers met once per model (an embedding, a classifier): markers only
_NUMBER = re.compile(r"(?<![^.])\d+(?![^.])")  # a dotted name's all-digit part


def role(name: str) -> str:
    """A layer's place in a repeated block: its name with the block number (its first
    all-digit part) as * ("l.3.fc1" -> "l.*.fc1", "blocks.0.1" -> "blocks.*.1")."""
    return _NUMBER.sub("*", str(name), count=1)


def line_groups(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[str, dict]]]:
    """``frame`` with a "line" column, and line -> (legend label, matplotlib style).

    One line where all points are of one kind; else by repeated layer where the models
    repeat 2 to len(LOOKS) of them (layers met once get markers of their own); else by kind."""
    if frame.empty or "kind" not in frame or frame["kind"].nunique() < 2:  # one kind (zoo blocks): one line
        return frame.assign(line=""), {}
    roles = frame["layer"].map(role) if "layer" in frame else pd.Series("", index=frame.index)
    per_model = frame.assign(role=roles).groupby(["family", "depth", "stat", "role"])["position"].nunique()
    repeated = sorted(set(per_model[per_model > 1].index.get_level_values("role")))
    if 2 <= len(repeated) <= len(LOOKS):
        line = roles.where(roles.isin(repeated), ONCE)
        kinds = frame.assign(role=roles).drop_duplicates("role").set_index("role")["kind"]
        looks = {r: (f"{_short(r)} ({KIND_NAMES.get(kinds.get(r), 'outputs').replace(' outputs', '')})", _look(i))
                 for i, r in enumerate(repeated)}  # fmt: skip
        if (line == ONCE).any():
            looks[ONCE] = ("layers met once", {"ls": "none", "marker": "*", "mfc": None})
        return frame.assign(line=line), looks
    kinds = sorted(frame["kind"].dropna().unique(), key=lambda k: (list(KIND_NAMES) + [k]).index(k))
    looks = {k: (KIND_NAMES.get(k, f"{k} outputs"), _look(i)) for i, k in enumerate(kinds)}
    return frame.assign(line=frame["kind"]), looks


def _short(role_name: str) -> str:
    """"linear1" for "encoder.layers.*.linear1"; the whole role where its last part is a number."""
    last = role_name.rsplit(".", 1)[-1]
    return role_name if last == "*" or last.isdigit() else last


def _look(i: int) -> dict:
    ls, marker = LOOKS[i % len(LOOKS)]
    return {"ls": ls, "marker": marker, "mfc": "white" if i else None}
