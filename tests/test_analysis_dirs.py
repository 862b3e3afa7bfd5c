"""The analysis-folder contract: written atomically, never over something else, read back whole."""

import json

import pandas as pd
import pytest

from gradlab import runs
from gradlab.analysis_dirs import ANALYSIS, read_analysis, write_analysis
from gradlab.errors import RunDirError
from gradlab.file_io import write_json


def frame(n):
    return pd.DataFrame({"x": range(n)})


def test_round_trip_and_rewrite_drops_tables_no_longer_written(tmp_path):
    out = tmp_path / "a"
    write_analysis(out, "lesion", {"unit": "block"}, {"lesion": frame(3), "runs": frame(1)})
    a = read_analysis(out)
    assert a.kind == "lesion" and a.settings == {"unit": "block"} and set(a.tables) == {"lesion", "runs"}
    write_analysis(out, "lesion", {"unit": "layer"}, {"lesion": frame(5)})
    a = read_analysis(out)
    assert set(a.tables) == {"lesion"} and len(a.tables["lesion"]) == 5
    assert not (out / "runs.parquet").exists()
    assert runs.scan(tmp_path, (ANALYSIS,))[ANALYSIS] == [out]  # what the report finds


def test_refuses_folders_holding_something_else_and_leaves_them_alone(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(RunDirError, match="not empty"):
        write_analysis(other, "probe-spp", {}, {"spp": frame(1)})
    run = tmp_path / "run"
    write_json(run / runs.SPEC, {"name": "r"})
    with pytest.raises(RunDirError, match="training run directory"):
        write_analysis(run, "probe-spp", {}, {"spp": frame(1)})
    write_analysis(tmp_path / "g", "probe-gradients", {}, {"layers": frame(1)})
    with pytest.raises(RunDirError, match="'probe-gradients' analysis"):
        write_analysis(tmp_path / "g", "probe-spp", {}, {"spp": frame(1)})
    assert (other / "notes.txt").read_text() == "keep" and sorted(p.name for p in run.iterdir()) == [runs.SPEC]


def test_a_listed_table_that_is_missing_is_named(tmp_path):
    out = write_analysis(tmp_path / "a", "probe-spp", {}, {"spp": frame(2)})
    (out / "spp.parquet").unlink()
    with pytest.raises(RunDirError, match="lacks spp.parquet"):
        read_analysis(out)
    meta = json.loads((out / ANALYSIS).read_text())
    assert meta["tables"] == ["spp"]
