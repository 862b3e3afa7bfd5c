"""`gradlab bench long-run`: every replayed step reaches the run directory, through either writer."""

import json

import pytest
from click.testing import CliRunner

from gradlab import runs
from gradlab.bench.long_run import time_flushes
from gradlab.cli.main import cli


@pytest.mark.parametrize("writer", ["append", "rewrite"])
def test_every_replayed_step_is_written_once(tmp_path, writer):
    result = time_flushes(tmp_path / "run", 200, writer, buffer_steps=64)
    layers = runs.read_run(tmp_path / "run").layers
    assert sorted(layers["step"].unique()) == list(range(200))
    assert len(layers) == result["rows"] and result["rows"] % 200 == 0
    assert [f["step"] for f in result["flushes"]] == [63, 127, 191, 199]  # a flush when the buffer fills, and the last
    per_step = layers.groupby("step").size()
    assert (per_step == per_step.iloc[0]).all() and per_step.iloc[0] > 500  # the transformer: ~750 rows a step


@pytest.mark.slow
def test_the_command_prints_both_writers_and_writes_json(tmp_path):
    out = tmp_path / "long.json"
    res = CliRunner().invoke(cli, ["bench", "long-run", "--steps", "300", "--baseline-steps", "200", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"append", "rewrite"}
    assert data["results"]["append"]["steps"] == 300 and data["results"]["rewrite"]["steps"] == 200
    for r in data["results"].values():
        w = r["windows"]
        assert w["end_over_start"] == pytest.approx(w["end"]["median_s"] / w["start"]["median_s"])
    assert "append-only (gradlab)" in res.output and "rewrite all (before)" in res.output
