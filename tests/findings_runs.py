"""Hand-made run directories for the findings tests: a chain of layers with chosen per-layer,
per-step values of any statistic and a chosen loss, written through gradlab's RunWriter, so
each rule meets exactly the case it names (and its healthy twin)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gradlab import runs as R
from gradlab.run_writer import RunWriter


def chain(n: int = 8, kind: str = "conv") -> list[dict]:
    """n main-path probe points l0..l{n-1} of one kind, in depth order."""
    return [{"name": f"l{i}", "index": i, "kind": kind, "block": None, "role": "main", "relu_after": True,
             "relu_output": False, "bn_next": False} for i in range(n)]  # fmt: skip


def write_run(root: Path, name: str, stats: dict[str, np.ndarray], loss=None, steps=None, kind: str = "conv",
              status: dict | None = None) -> Path:
    """A run ``name`` under ``root``: ``stats`` maps a statistic to a [steps, layers] array
    (parameter statistics go to l<i>.weight, output statistics to l<i>); ``loss``: per step."""
    n_steps, n_layers = next(iter(stats.values())).shape
    steps = np.arange(n_steps) if steps is None else np.asarray(steps)
    points = chain(n_layers, kind)
    rows = []
    for stat, values in stats.items():
        param = stat in ("grad_norm", "weight_norm", "update_norm", "grad_weight_ratio")
        for i in range(n_layers):
            layer = f"l{i}.weight" if param else f"l{i}"
            rows.append(pd.DataFrame({"step": steps, "layer": layer, "index": i, "kind": kind, "stat": stat,
                                      "value": np.asarray(values[:, i], dtype=np.float64)}))  # fmt: skip
    frame = pd.concat(rows, ignore_index=True).astype({"step": "int64", "index": "int32"})
    model = {"name": name, "family": "mine", "probe_points": points,
             "parameters": [{"name": f"l{i}.weight", "index": i, "kind": kind, "shape": [4, 4]} for i in range(n_layers)]}
    writer = RunWriter(root / name, name=name, overwrite=True, flush_seconds=None)
    writer.open(model, {"stats": list(stats)}, {"torch": "n/a"})
    if loss is not None:
        for step, value in zip(steps, loss):
            writer.log({"step": int(step), "loss": float(value)})
    writer.add_layers(frame)
    writer.close(R.DONE, int(steps[-1]), **(status or {}))
    return root / name


def along_depth(per_layer: float, n_layers: int = 8, n_steps: int = 5, start: float = 1.0) -> np.ndarray:
    """Values that change ``per_layer`` times from one layer to the next towards the output
    (so the input end is per_layer**-(n-1) times the output end), the same at every step."""
    row = start * per_layer ** np.arange(n_layers, dtype=np.float64)
    return np.tile(row, (n_steps, 1))
