"""The report's data frames hold exactly the numbers written into hand-made runs."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from gradlab import runs as R
from gradlab import stat_names as S
from gradlab.file_io import write_json
from gradlab.report import collect as C
from gradlab.report import layer_frames as L

from gradlab.bench import synthetic_runs as F
from tests import damage as D


def load(paths):
    runs, problems = R.load_all(paths)
    assert not problems
    return runs


def test_finals_are_the_numbers_written(tmp_path):
    F.make_run(tmp_path, "plain", 20, final_train_err=0.0812, final_test_err=0.1034)
    F.make_run(tmp_path, "resnet", 56, final_train_err=0.0123, final_test_err=0.0701)
    finals = C.finals(load(tmp_path)).set_index("label")
    assert finals.loc["plain-20", "train_err"] == 0.0812
    assert finals.loc["plain-20", "test_err"] == 0.1034
    assert finals.loc["ResNet-56", "train_err"] == 0.0123
    assert finals.loc["ResNet-56", "test_err"] == 0.0701
    assert finals.loc["ResNet-56", "final_step"] == 400
    assert list(finals.index) == ["plain-20", "ResNet-56"]  # plain first, then ResNets


def test_final_errors_use_the_last_evaluation():
    m = pd.DataFrame(
        {
            "step": [100, 200, 300],
            "train_err": [0.5, 0.3, 0.2],
            "test_err": [0.6, 0.4, np.nan],  # step 300 logged training error only
        }
    )
    assert C.final_errors(m) == (200.0, 0.3, 0.4)
    m.loc[1, "train_err"] = np.nan  # no training error at that evaluation: the last before it
    assert C.final_errors(m) == (200.0, 0.5, 0.4)
    never = pd.DataFrame({"step": [10], "train_err": [0.7], "test_err": [np.nan]})
    step, train, test = C.final_errors(never)
    assert (step, train) == (10.0, 0.7) and np.isnan(test)


def test_by_model_mean_and_sample_std_over_three_seeds(tmp_path):
    trains = [0.10, 0.12, 0.17]
    tests = [0.20, 0.21, 0.26]
    for seed, (tr, te) in enumerate(zip(trains, tests)):
        F.make_run(tmp_path, "plain", 56, seed, final_train_err=tr, final_test_err=te, layers=False)
    F.make_run(tmp_path, "plain", 20, 0, final_train_err=0.05, final_test_err=0.09, layers=False)
    runs = load(tmp_path)
    models = C.by_model(C.finals(runs), C.run_table(runs)).set_index("label")
    row = models.loc["plain-56"]
    assert row["n"] == 3
    assert row["train_mean"] == pytest.approx(np.mean(trains))
    assert row["train_std"] == pytest.approx(np.std(trains, ddof=1))
    assert row["test_mean"] == pytest.approx(np.mean(tests))
    assert row["test_std"] == pytest.approx(np.std(tests, ddof=1))
    assert (row["train_min"], row["train_max"]) == (0.10, 0.17)
    assert models.loc["plain-20", "n"] == 1 and np.isnan(models.loc["plain-20", "train_std"])
    assert list(models.index) == ["plain-20", "plain-56"]


def test_gradient_flow_at_step_0_equals_what_was_written(tmp_path):
    path = F.make_run(tmp_path, "resnet", 20, shortcut="B")  # B: projection shortcuts to leave out
    written = pd.read_parquet(path / R.LAYERS)
    run = load(path)[0]
    flow = L.gradient_flow([run], L.load_layer_data([run]))
    got = flow[(flow["phase"] == "init") & (flow["stat"] == S.GRAD_NORM)].sort_values("position")
    assert (got["step"] == 0).all()

    points = run.model["probe_points"]
    main = [
        p["name"]
        for p in sorted(points, key=lambda p: p["index"])
        if p["kind"] in ("conv", "fc") and p["role"] == "main"
    ]
    assert len(main) == 20  # 19 convs + fc: the depth of ResNet-20
    w0 = written[(written["step"] == 0) & (written["stat"] == S.GRAD_NORM)].set_index("layer")["value"]
    assert list(got["layer"]) == [f"{n}.weight" for n in main]
    np.testing.assert_array_equal(got["value"].to_numpy(), w0.loc[[f"{n}.weight" for n in main]].to_numpy())
    assert list(got["position"]) == list(range(1, 21))
    assert not got["layer"].str.contains("shortcut").any()
    assert list(got["kind"].iloc[[0, -1]]) == ["conv", "fc"]

    # dL/dh at the conv outputs, same positions
    act = flow[(flow["phase"] == "init") & (flow["stat"] == S.ACT_GRAD_NORM)].sort_values("position")
    a0 = written[(written["step"] == 0) & (written["stat"] == S.ACT_GRAD_NORM)].set_index("layer")["value"]
    convs = [n for n in main if n != "fc"]
    assert list(act["layer"]) == convs
    np.testing.assert_array_equal(act["value"].to_numpy(), a0.loc[convs].to_numpy())


def test_phases_pick_init_nearest_five_percent_and_end():
    steps = [0, 10, 20, 40, 80, 160, 400]
    assert L.phase_steps(steps, total=400) == {"init": 0, "early": 20, "end": 400}
    assert L.phase_steps([0, 400], total=400) == {"init": 0, "end": 400}
    assert L.phase_steps([], total=400) == {}


def test_responses_are_act_std_at_main_bn_points_at_the_end(tmp_path):
    path = F.make_run(tmp_path, "plain", 20)
    written = pd.read_parquet(path / R.LAYERS)
    run = load(path)[0]
    resp = L.responses([run], L.load_layer_data([run])).sort_values("position")
    last = written["step"].max()
    assert (resp["step"] == last).all()
    bns = [p["name"] for p in run.model["probe_points"] if p["kind"] == "bn" and p["role"] == "main"]
    assert list(resp["layer"]) == bns and len(bns) == 19
    w = written[(written["step"] == last) & (written["stat"] == S.ACT_STD)].set_index("layer")["value"]
    np.testing.assert_array_equal(resp["value"].to_numpy(), w.loc[bns].to_numpy())
    top = resp.sort_values("rank")["value"].to_numpy()
    assert (np.diff(top) <= 0).all()  # rank 1 = largest


def test_heatmap_is_layers_by_recorded_steps(tmp_path):
    path = F.make_run(tmp_path, "plain", 20, n_records=12)
    run = load(path)[0]
    frame = L.read_layer_stats(run)
    m = L.gradient_heatmap(run, frame)
    steps = F.record_steps(400, 12)
    assert m.shape == (20, len(steps))
    assert list(m.columns) == list(steps)
    written = pd.read_parquet(path / R.LAYERS)
    v = written[
        (written["step"] == steps[-1]) & (written["layer"] == "conv1.weight") & (written["stat"] == S.GRAD_NORM)
    ]
    assert m.loc[1, steps[-1]] == v["value"].iloc[0]


def test_read_layer_stats_reads_only_the_stats_asked_for(tmp_path):
    path = F.make_run(tmp_path, "resnet", 20)
    run = load(path)[0]
    frame = L.read_layer_stats(run, (S.ACT_STD,))
    assert set(frame["stat"].astype(str)) == {S.ACT_STD}
    assert isinstance(frame["layer"].dtype, pd.CategoricalDtype)


def test_missing_and_damaged_layer_files_are_reported_not_raised(tmp_path):
    off = F.make_run(tmp_path, "plain", 20, layers=False)
    bad = F.make_run(tmp_path, "resnet", 20)
    D.truncate_file(bad / R.LAYERS)
    good = F.make_run(tmp_path, "resnet", 56)
    runs = [R.read_run(d) for d in R.find_run_dirs(tmp_path)]  # as a report reads them: metrics still drawn
    assert [str(p) for p, _ in R.load_all(tmp_path)[1]] == [str(bad)]  # `gradlab runs` lists it as damaged
    data = L.load_layer_data(runs)
    assert set(data.frames) == {"resnet56-s0"}
    assert "recording was off" in data.missing["plain20-s0"]
    assert "damaged" in data.missing["resnet20-s0"] and "layers.parquet" in data.missing["resnet20-s0"]
    assert off.exists() and good.exists()


def test_state_notes(tmp_path):
    F.make_run(tmp_path, "plain", 20, state=R.DONE)
    F.make_run(
        tmp_path, "plain", 56, state=R.DIVERGED, upto=200, nonfinite={"step": 180, "layer": "fc.weight", "what": "loss"}
    )
    F.make_run(tmp_path, "resnet", 20, state=R.RUNNING, upto=100, pid=os.getpid())
    F.make_run(tmp_path, "resnet", 56, state=R.RUNNING, upto=150, pid=F.DEAD_PID)
    F.make_run(tmp_path, "resnet", 110, state=R.FAILED, upto=50)
    table = C.run_table(load(tmp_path)).set_index("label")
    assert table.loc["plain-20", "note"] == ""
    assert table.loc["plain-56", "note"] == "diverged @ step 180"
    assert table.loc["ResNet-20", "note"] == "running @ step 100/400"
    assert table.loc["ResNet-56", "state"] == "crashed"
    assert table.loc["ResNet-56", "note"] == "crashed @ step 150/400"
    assert table.loc["ResNet-110", "note"] == "failed @ step 50/400"
    notes = C.model_notes(table.reset_index())
    assert notes[("plain", 56)] == "diverged @ step 180"
    assert ("plain", 20) not in notes


def test_model_notes_name_the_seed_when_several(tmp_path):
    F.make_run(tmp_path, "plain", 56, 0, layers=False)
    F.make_run(tmp_path, "plain", 56, 1, state=R.DIVERGED, upto=120, layers=False)
    notes = C.model_notes(C.run_table(load(tmp_path)))
    assert notes[("plain", 56)] == "seed 1 diverged @ step 120"


def test_flow_by_model_is_a_geometric_mean_over_seeds(tmp_path):
    flow = pd.DataFrame(
        {
            "run": ["a", "b", "c"],
            "family": "plain",
            "depth": 20,
            "seed": [0, 1, 2],
            "label": "plain-20",
            "phase": "init",
            "step": 0,
            "stat": S.GRAD_NORM,
            "position": 1,
            "kind": "conv",
            "layer": "conv1.weight",
            "value": [1e-3, 1e-1, np.inf],  # a diverged seed's non-finite value is left out
        }
    )
    out = L.flow_by_model(flow)
    assert out["value"].iloc[0] == pytest.approx(1e-2)
    assert out["n"].iloc[0] == 3


def test_a_gradient_exactly_zero_in_every_seed_is_marked_and_left_to_the_findings(tmp_path):
    from gradlab.report.summary import summarize

    rows = [  # Fixup-like: the classifier starts at zero, so nothing before it gets a gradient at step 0
        dict(run=f"fixup20-s{seed}", family="fixup", depth=20, seed=seed, label="Fixup-20", phase="init", step=0,
             stat=S.GRAD_NORM, position=pos, kind=kind, layer=f"l{pos}", value=value)
        for seed in (0, 1)
        for pos, kind, value in ((1, "conv", 0.0), (2, "conv", 0.0 if seed == 0 else 1e-3), (3, "fc", 0.5))
    ]  # fmt: skip
    out = L.flow_by_model(pd.DataFrame(rows)).sort_values("position")
    assert list(out["zero"]) == [True, False, False]  # zero in one seed only is not "exactly 0"
    assert np.isnan(out["value"].iloc[0]) and out["value"].iloc[1] == pytest.approx(1e-3)
    # the summary says neither the zero nor a first-to-last ratio of a family other than plain/ResNet
    # (issue #28): the zero_gradients and vanishing/exploding findings say it per run, above it
    said = summarize(pd.DataFrame(columns=["train_mean"]), out, None, {})
    assert not any("exactly 0" in s or "first-to-last" in s or "from the last layer to the first" in s for s in said)


def test_a_zero_gradient_at_the_end_gets_no_summary_sentence_either():
    from gradlab.report.summary import summarize

    # a BN ResNet driven dead by lr 50: its gradients are exactly 0 at the end, not at init
    rows = [dict(run="resnet20-s0", family="resnet", depth=20, seed=0, label="ResNet-20", phase=phase, step=step,
                 stat=S.GRAD_NORM, position=pos, kind="conv", layer=f"l{pos}", value=value)
            for phase, step, zero in (("init", 0, False), ("end", 30, True))
            for pos, value in ((1, 0.0 if zero else 0.2), (2, 0.0 if zero else 0.1), (3, 0.3))]  # fmt: skip
    out = L.flow_by_model(pd.DataFrame(rows))
    said = summarize(pd.DataFrame(columns=["train_mean"]), out, None, {})
    assert not any("exactly 0" in s or "zero-initialized" in s for s in said)


def test_runs_without_probe_points_fall_back_to_the_rows_kind_and_index(tmp_path):
    path = F.make_run(tmp_path, "plain", 20)
    spec = json.loads((path / R.SPEC).read_text())
    del spec["model"]["probe_points"]
    write_json(path / R.SPEC, spec)
    run = load(path)[0]
    flow = L.gradient_flow([run], L.load_layer_data([run]))
    init = flow[(flow["phase"] == "init") & (flow["stat"] == S.GRAD_NORM)].sort_values("position")
    assert list(init["position"]) == list(range(1, 21))
    assert init["layer"].iloc[0] == "conv1.weight" and init["layer"].iloc[-1] == "fc.weight"
    assert len(L.responses([run], L.load_layer_data([run]))) == 19


def test_a_live_run_not_yet_flushed_is_said_to_record_and_shown_at_the_step_reached(tmp_path):
    live = F.make_run(tmp_path, "resnet", 20, state=R.RUNNING, upto=25, pid=os.getpid(), layers=False)
    spec = json.loads((live / R.SPEC).read_text())
    write_json(live / R.SPEC, {**spec, "recorder": {"stats": [S.GRAD_NORM]}})  # recording on
    write_json(live / R.STATUS, {**R.read_status(live), "step": 0})  # status.json: written at the start only
    off = F.make_run(tmp_path, "plain", 20, layers=False)  # recording off, finished
    runs = load(tmp_path)
    data = L.load_layer_data(runs)
    assert data.missing["resnet20-s0"] == (
        "layer recording is on, and nothing is flushed yet (the run is running, at step 25); rows are written at "
        "each checkpoint or flush: report again later")
    assert data.missing["plain20-s0"] == "no layers.parquet (layer recording was off)"
    table = C.run_table(runs).set_index("label")
    assert table.loc["ResNet-20", "note"] == "running @ step 25/400"
    assert off.exists()
    write_json(live / R.STATUS, {**R.read_status(live), "state": R.FAILED})  # it died before its first flush
    (run,) = [r for r in load(tmp_path) if r.path == live]
    assert L.missing_layers_note(run) == ("no layers.parquet: layer recording was on, but the run ended failed "
                                          "before its first flush")  # fmt: skip
