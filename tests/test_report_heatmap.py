"""The layer × step gradient heatmap: one panel per model with its seeds pooled (issue #32,
item 15: a 500-run report drew a figure per seed), checked against the values written."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlab import runs as R
from gradlab import stat_names as S
from gradlab.bench import synthetic_runs as F
from gradlab.report import build_report
from gradlab.report import layer_frames as L
from gradlab.report.inputs import find, read_runs


def _written(path, layer: str, step: int) -> float:
    w = pd.read_parquet(path / R.LAYERS)
    return float(w[(w["layer"] == layer) & (w["step"] == step) & (w["stat"] == S.GRAD_NORM)]["value"].iloc[0])


def test_two_seeds_of_a_model_make_one_panel_holding_their_geometric_mean(tmp_path):
    a = F.make_run(tmp_path / "runs", "plain", 20, seed=0, n_records=12)
    b = F.make_run(tmp_path / "runs", "plain", 20, seed=1, n_records=12)
    F.make_run(tmp_path / "runs", "resnet", 20, seed=0, n_records=12)
    runs, _ = read_runs(find([tmp_path / "runs"])[0])
    maps = L.model_heatmaps(runs, L.load_layer_data(runs))
    assert sorted(maps) == [("plain", 20), ("resnet", 20)]
    m = maps[("plain", 20)]
    steps = F.record_steps(400, 12)
    assert m.shape == (20, len(steps)) and list(m.columns) == list(steps) and m.attrs["seeds"] == 2
    for layer, position in (("conv1.weight", 1), ("fc.weight", 20)):
        for step in (steps[0], steps[-1]):
            expected = np.sqrt(_written(a, layer, step) * _written(b, layer, step))
            assert np.isclose(m.loc[position, step], expected, rtol=1e-12)
    assert maps[("resnet", 20)].attrs["seeds"] == 1

    result = build_report([tmp_path / "runs"], tmp_path / "out", formats="png", workers=1)
    drawn = sorted(p.name for p in result.files if p.name.startswith("gradient_heatmap"))
    assert drawn == ["gradient_heatmap.png"]  # not one figure per seed
    assert "geometric mean over its seeds" in result.report.read_text()


def test_pooling_keeps_each_seeds_steps_and_marks_a_non_finite_seed():
    seed0 = pd.DataFrame({"position": [1, 1, 2], "step": [0, 10, 0], "value": [1.0, 4.0, 2.0]})
    seed1 = pd.DataFrame({"position": [1, 2, 2], "step": [0, 0, 20], "value": [4.0, np.inf, 3.0]})
    m = L.pool_seeds([seed0, seed1])
    assert list(m.columns) == [0, 10, 20] and list(m.index) == [1, 2]
    assert np.isclose(m.loc[1, 0], 2.0)  # sqrt(1 * 4)
    assert np.isclose(m.loc[1, 10], 4.0) and np.isclose(m.loc[2, 20], 3.0)  # one seed recorded the step: its value
    assert np.isnan(m.loc[2, 0])  # one seed non-finite: grey, not the other seed's 2.0
    assert np.isnan(m.loc[1, 20])  # recorded by no seed
