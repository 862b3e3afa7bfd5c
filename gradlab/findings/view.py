"""A run as the rules read it: its per-layer statistics with each layer's place along depth
(the recorder's index: 0 nearest the input) and role (main path or shortcut), its loss per
step, its status. Read once per run; pandas only, no torch.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from gradlab import runs as R
from gradlab.findings.finding import Place

__all__ = ["LOSS_COLUMNS", "RunView", "by_step", "steps_between"]

LOSS_COLUMNS = ("train_loss", "loss")  # gradlab's trainer, then a user's own rec.log(loss=...)
FINITE_STATS = ("weight_norm", "act_mean", "act_std", "act_grad_norm", "grad_norm")  # NaN only when broken
MAIN = "main"


class RunView:
    """``run``: a gradlab.runs.Run; ``key``: how findings name it."""

    def __init__(self, run: R.Run, key: str | None = None):
        self.run = run
        self.key = key or run.name

    @cached_property
    def layers(self) -> pd.DataFrame:
        """step, layer, position, kind, role, stat, value (layer as str)."""
        rows = self.run.layers
        if rows.empty:
            return pd.DataFrame({"step": np.empty(0, np.int64), "layer": np.empty(0, object),
                                 "position": np.empty(0, np.int64), "kind": np.empty(0, object),
                                 "role": np.empty(0, object), "stat": np.empty(0, object),
                                 "value": np.empty(0, np.float64)})  # fmt: skip
        roles = {p["name"]: p.get("role") or MAIN for p in self.run.model.get("probe_points") or []}
        layer = rows["layer"].astype("category")  # a few hundred names over many rows: work on the names
        names = layer.cat.categories.astype(str)
        owners = names.str.replace(r"\.(weight|bias)$", "", regex=True)
        role = np.array([roles.get(o, MAIN) for o in owners], dtype=object)
        codes = layer.cat.codes.to_numpy()
        return pd.DataFrame({
            "step": rows["step"].to_numpy(np.int64),
            "layer": np.asarray(names, dtype=object)[codes],
            "position": rows["index"].to_numpy(np.int64),
            "kind": _strings(rows["kind"]),
            "role": role[codes],
            "stat": _strings(rows["stat"]),
            "value": rows["value"].to_numpy(np.float64),
        })  # fmt: skip

    @cached_property
    def finite_until(self) -> int | None:
        """The first step with a non-finite weight, activation or gradient statistic (the
        recorder's sighting in status.json, else the rows), None when none: what follows it
        is its consequence, which the other rules leave to nonfinite_onset."""
        seen = self.status.get("nonfinite")
        if seen:
            return int(seen["step"])
        rows = self.layers[self.layers["stat"].isin(FINITE_STATS)]
        bad = rows.loc[~np.isfinite(rows["value"].to_numpy()), "step"]
        return int(bad.min()) if len(bad) else None

    def stat(self, name: str, main_path: bool = True, after_nonfinite: bool = False) -> pd.DataFrame:
        """The rows of one statistic (main-path layers only by default), sorted by step and
        position; only the steps before the first non-finite value unless ``after_nonfinite``."""
        at = self._rows_of.get(name)
        rows = self.layers.iloc[at] if at is not None else self.layers.iloc[0:0]
        if main_path:
            rows = rows[rows["role"] == MAIN]
        if not after_nonfinite and self.finite_until is not None:
            rows = rows[rows["step"] < self.finite_until]
        return rows.sort_values(["step", "position", "layer"], kind="stable").reset_index(drop=True)

    def matrices(self, layers) -> list[str]:
        """Those of ``layers`` that are weight matrices or kernels (two or more dimensions, as
        spec.json's parameter shapes say; without them, the ``.weight`` of conv and linear
        layers): the ones whose norms compare; gains, biases, scales and gates may start at
        or near zero."""
        shapes = {p["name"]: p.get("shape") for p in self.run.model.get("parameters") or []}
        if shapes:
            return [x for x in layers if len(shapes.get(x) or ()) >= 2]
        weighted = self._weighted  # a zoo net: by the kind of the owner
        return [x for x in layers if str(x).endswith(".weight") and x in weighted]

    @cached_property
    def _rows_of(self) -> dict:
        """Statistic -> the positions of its rows (one pass over the names for every stat())."""
        return self.layers.groupby("stat", sort=False).indices

    @cached_property
    def _weighted(self) -> set[str]:
        return set(self.layers.loc[self.layers["kind"].isin(("conv", "fc")), "layer"].unique())

    def table(self, name: str, main_path: bool = True) -> pd.DataFrame:
        """One statistic as a step × layer frame, layers in depth order."""
        return by_step(self.stat(name, main_path))

    @cached_property
    def positions(self) -> dict[str, int]:
        return dict(zip(self.layers["layer"], self.layers["position"]))

    def place(self, layer: str) -> Place:
        return Place(layer, int(self.positions.get(layer, -1)))

    def places(self, layers) -> tuple[Place, ...]:
        """Places of ``layers``, shallowest first."""
        return tuple(sorted((self.place(x) for x in layers), key=lambda p: (p.position, p.layer)))

    @cached_property
    def loss(self) -> pd.Series:
        """The training loss by step (empty when none was logged)."""
        metrics = self.run.metrics
        for column in LOSS_COLUMNS:
            if column in metrics:
                series = metrics[["step", column]].dropna()
                return pd.Series(series[column].to_numpy(np.float64), index=series["step"].to_numpy(np.int64))
        return pd.Series(dtype=np.float64)

    @property
    def status(self) -> dict:
        return self.run.status


def _strings(column: pd.Series) -> np.ndarray:
    """A column of a few distinct strings as an object array, converted once per value."""
    cat = column.astype("category")
    return np.asarray(cat.cat.categories.astype(str), dtype=object)[cat.cat.codes.to_numpy()]


def by_step(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of one statistic (step, layer, position, value) as a step × layer frame, layers in
    depth order; empty for no rows."""
    if rows.empty:
        return pd.DataFrame()
    order = rows.drop_duplicates("layer").sort_values(["position", "layer"])["layer"].tolist()
    table = rows.groupby(["step", "layer"], sort=False)["value"].last().unstack()  # (a repeated step: the last)
    return table.sort_index()[order]


def steps_between(table: pd.DataFrame) -> np.ndarray:
    """Per row of a step × layer frame, the steps since the previous record (NaN for the
    first), as a column to divide by: an update spans every step between two records."""
    return np.diff(table.index.to_numpy(np.float64), prepend=np.nan)[:, None]
