"""Runs of several recipes (#30): grouping by what differs, the 95 % t-interval, selection on
validation error (never test), the sensitivity figure and table, and the report's sentences."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from gradlab import runs as R
from gradlab.bench import synthetic_runs as F
from gradlab.errors import ConfigError
from gradlab.report import grouping as G
from gradlab.report import recipes as RC
from gradlab.report import selection as S
from gradlab.report.build import build_report
from gradlab.seed_noise import apart, from_summary, interval, t_quantile


def make(root, family, depth, seed, lr, train, test, val=None, val_split=0):
    """A finished synthetic run at ``lr`` named as compare names a sweep's runs, with a final
    validation error ``val`` (held out of the training set when ``val_split``)."""
    name = f"{family}{depth}-lr{lr:g}-s{seed}"
    run_dir = F.make_run(root, family, depth, seed, 60, final_train_err=train, final_test_err=test, layers=False,
                         name=name)
    spec = json.loads((run_dir / R.SPEC).read_text())
    spec["recipe"]["lr"] = lr
    spec["data"].update({"val_split": val_split, "val_size": val_split})
    (run_dir / R.SPEC).write_text(json.dumps(spec))
    if val is not None:
        metrics = pd.read_parquet(run_dir / R.METRICS)
        metrics["val_err"] = np.where(metrics["test_err"].notna(), val, np.nan)
        metrics.to_parquet(run_dir / R.METRICS)
    return run_dir


# --- interval arithmetic ---------------------------------------------------------------------


def test_t_quantiles_and_interval_against_known_values():
    assert t_quantile(2) == pytest.approx(12.7062, abs=1e-4)  # t(0.975, 1 df)
    assert t_quantile(3) == pytest.approx(4.3027, abs=1e-4)  # t(0.975, 2 df)
    assert math.isnan(t_quantile(1))
    iv = interval([0.10, 0.12, 0.17])  # mean 0.13, sample std 0.036056
    assert iv.n == 3 and iv.mean == pytest.approx(0.13) and iv.std == pytest.approx(0.0360555, abs=1e-6)
    assert iv.half == pytest.approx(4.3027 * 0.0360555 / math.sqrt(3), abs=1e-5)
    two = interval([0.2, 0.3])  # std 0.0707, half = 12.706 * 0.0707 / sqrt(2) = 0.6353
    assert two.half == pytest.approx(0.63531, abs=1e-4)
    one = interval([0.2])
    assert not one.known and math.isnan(one.half)
    assert apart(one, two) is None
    assert apart(from_summary(0.10, 0.001, 3), from_summary(0.20, 0.001, 3)) is True
    assert apart(from_summary(0.10, 0.05, 3), from_summary(0.12, 0.05, 3)) is False


# --- grouping --------------------------------------------------------------------------------


def test_differing_settings_leave_out_what_every_run_shares():
    found = G.differing([{"lr": 0.1, "wd": 1e-4, "seed": 0}, {"lr": 0.03, "wd": 1e-4, "seed": 1}, {"lr": 0.1, "wd": 1e-4}])
    assert found == [{"lr": 0.1}, {"lr": 0.03}, {"lr": 0.1}]
    assert G.setting_label({"lr": 0.1, "weight_decay": 5e-4, "data.val_split": 300}) == "lr 0.1, wd 0.0005, val_split 300"
    # runs of someone's own loop: their config, flattened
    assert G.differing([{"opt.lr": 1, "opt.beta": 2}, {"opt.lr": 3, "opt.beta": 2}]) == [{"opt.lr": 1}, {"opt.lr": 3}]
    # runs already named apart (post-LN, pre-LN) keep their labels; two runs of one name are told apart
    configs = [{"norm_first": False, "lr": 0.03}, {"norm_first": True, "lr": 0.03}, {"norm_first": True, "lr": 0.1}]
    assert G.differing(configs, within=["post-LN", "pre-LN", "pre-LN"]) == [{"lr": 0.03}, {"lr": 0.03}, {"lr": 0.1}]
    assert G.differing(configs[:2], within=["post-LN", "pre-LN"]) == [{}, {}]


def test_fixup20_at_two_lrs_is_two_rows_and_two_seeds_one_row_with_an_interval(tmp_path):
    for seed, (train, test) in enumerate(((0.08, 0.06), (0.10, 0.07))):
        make(tmp_path, "fixup", 20, seed, 0.1, train, test)
    make(tmp_path, "fixup", 20, 0, 0.03, 0.75, 0.65)
    out = tmp_path / "report"
    result = build_report(tmp_path, out, formats=("png",))
    table = result.table.set_index("label")
    assert list(table.index) == ["Fixup-20 (lr 0.03)", "Fixup-20 (lr 0.1)"]
    assert table.loc["Fixup-20 (lr 0.1)", "n"] == 2 and table.loc["Fixup-20 (lr 0.03)", "n"] == 1
    half = t_quantile(2) * np.std([0.06, 0.07], ddof=1) / math.sqrt(2)
    assert table.loc["Fixup-20 (lr 0.1)", "test_ci"] == pytest.approx(half)
    md = (out / "table.md").read_text()
    assert "| Fixup-20 (lr 0.1) | 20 | 0.27M | 2 | 9.00 ± 1.41 [0.00, 21.71] | 6.50 ± 0.71 [0.15, 12.85] |" in md
    assert "| Fixup-20 (lr 0.03) | 20 | 0.27M | 1 | 75.00 | 65.00 |" in md
    assert (out / "figures" / "sensitivity_lr.png").exists() and (out / "sensitivity_lr.md").exists()
    assert "## Sensitivity to lr" in (out / "report.md").read_text()


def test_one_recipe_adds_no_setting_to_the_labels(tmp_path):
    for seed in (0, 1):
        make(tmp_path, "resnet", 20, seed, 0.1, 0.05, 0.06)
    result = build_report(tmp_path, tmp_path / "report", formats=("png",))
    assert list(result.table["label"]) == ["ResNet-20"]
    assert not (tmp_path / "report" / "sensitivity_lr.md").exists()


# --- selection -------------------------------------------------------------------------------


def _sweep(root, val_split=300):
    """Fixup and plain at depth 20 over lr 0.01, 0.03, 0.1, two seeds: Fixup's validation
    minimum is planted at 0.1 while its test error is lowest at 0.03; plain's at 0.03."""
    vals = {("fixup", 0.01): 0.80, ("fixup", 0.03): 0.40, ("fixup", 0.1): 0.10,
            ("plain", 0.01): 0.20, ("plain", 0.03): 0.05, ("plain", 0.1): 0.15}
    for (family, lr), val in vals.items():
        test = 0.02 if (family, lr) == ("fixup", 0.03) else val + 0.01
        for seed in (0, 1):
            make(root, family, 20, seed, lr, val, test + 0.01 * seed, val + 0.002 * seed, val_split)


def test_selection_chooses_the_planted_validation_minimum_not_the_test_one(tmp_path):
    _sweep(tmp_path)
    out = tmp_path / "report"
    result = build_report(tmp_path, out, formats=("png",), select=("lr",))
    table = result.table.set_index("label")
    assert list(table.index) == ["plain-20", "Fixup-20"]  # the chosen lr is no longer in the label
    assert table.loc["Fixup-20", "chosen"] == "lr 0.1 (val 10.1%)"
    assert table.loc["plain-20", "chosen"] == "lr 0.03 (val 5.1%)"
    assert table.loc["Fixup-20", "n"] == 2
    text = " ".join(result.summary)
    assert ("Each model is shown at the lr with the lowest validation error, mean over its seeds (300 images held "
            "out of the training set; the test error played no part): 4 of the 12 runs.") in text
    assert "Fixup: Fixup-20 at lr 0.1 (validation 10.1%, test 11.5%, 95 % interval ±6.4 points)." in text
    assert "left out" not in text
    md = (out / "table.md").read_text()
    assert "chosen on validation" in md and "| lr 0.1 (val 10.1%) |" in md
    report = (out / "report.md").read_text()
    assert "Each model at its lr chosen on validation error (the table's last column)." in report  # captions
    assert "Ringed: the value chosen on validation error." in report
    sens = (out / "sensitivity_lr.md").read_text()
    assert "| **Fixup-20** | **0.1** | 2 |" in sens and "| Fixup-20 | 0.03 | 2 |" in sens
    assert "Bold: the value chosen on validation error." in sens


def test_without_select_nothing_says_a_value_was_chosen(tmp_path):
    _sweep(tmp_path)
    result = build_report(tmp_path, tmp_path / "report", formats=("png",))
    text = " ".join(result.summary) + (tmp_path / "report" / "table.md").read_text()
    assert "chosen" not in text and "Bold:" not in (tmp_path / "report" / "sensitivity_lr.md").read_text()
    report = (tmp_path / "report" / "report.md").read_text()
    assert "chosen on validation" not in report and "Ringed" not in report and "Each model is shown at" not in report
    assert "Fixup-20 (lr 0.1)" in text


def test_selection_on_test_is_refused_and_needs_a_validation_split(tmp_path):
    with pytest.raises(ConfigError, match="--select-on test is refused: a value chosen on the test error"):
        S.check_request(("lr",), "test")
    with pytest.raises(ConfigError, match="add --val-split N"):
        S.check_request(("lr",), "val", swept=("lr",), val_split=0)
    with pytest.raises(ConfigError, match="--select wd: wd takes one value here \\(the sweep varies lr\\)"):
        S.check_request(("wd",), "val", swept=("lr",))
    _sweep(tmp_path, val_split=0)
    for run_dir in (tmp_path / "degradation-test").iterdir():  # no validation errors at all
        m = pd.read_parquet(run_dir / R.METRICS).drop(columns="val_err")
        m.to_parquet(run_dir / R.METRICS)
    with pytest.raises(ConfigError, match="no run has a validation error to choose on"):
        build_report(tmp_path, tmp_path / "report", formats=("png",), select=("lr",))
    with pytest.raises(ConfigError, match="refused"):
        build_report(tmp_path, tmp_path / "report", formats=("png",), select=("lr",), select_on="test")
    assert not (tmp_path / "report").exists()


def test_report_cli_refuses_test_selection_in_one_line(tmp_path):
    from click.testing import CliRunner

    from gradlab.cli.main import cli

    res = CliRunner().invoke(cli, ["report", str(tmp_path), "--select", "lr", "--select-on", "test"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "--select-on test is refused" in res.output


def test_sort_runs_orders_values_as_numbers():
    runs = [type("Run", (), {"path": p})() for p in ("a", "b", "c")]
    settings = {"a": {"lr": 0.1}, "b": {"lr": 0.003}, "c": {"lr": 0.03}}
    assert [r.path for r in RC.sort_runs(runs, settings)] == ["b", "c", "a"]


def test_the_degradation_finding_judges_seeds_by_the_same_intervals(tmp_path):
    from gradlab.findings import check_runs

    for seed, (e20, e56) in enumerate(((0.04, 0.30), (0.05, 0.31))):
        F.make_run(tmp_path, "plain", 20, seed, 60, final_train_err=e20, layers=False)
        F.make_run(tmp_path, "plain", 56, seed, 60, final_train_err=e56, layers=False)
    (f,) = [x for x in check_runs(R.load(tmp_path)) if x.rule == "degradation"]
    assert "beyond the 95 % intervals of 2 seeds" in f.evidence and "no noise estimate" not in f.evidence


def test_a_model_without_validation_error_is_named_as_left_out(tmp_path):
    _sweep(tmp_path)
    make(tmp_path, "resnet", 20, 0, 0.1, 0.05, 0.06)  # trained without a validation split
    make(tmp_path, "resnet", 20, 0, 0.03, 0.05, 0.06)
    result = build_report(tmp_path, tmp_path / "report", formats=("png",), select=("lr",))
    assert "ResNet-20: no lr chosen (no validation error), so it is left out." in result.summary
    assert "ResNet-20" not in list(result.table["label"])


def test_trainer_runs_of_two_experiments_are_said_to_be_drawn_together(tmp_path):
    from gradlab.report.inputs import experiments_warning

    one = [R.read_run(F.make_run(tmp_path, F.RESNET, 20, seed=s, experiment="a", layers=False)) for s in (0, 1)]
    other = R.read_run(F.make_run(tmp_path, F.PLAIN, 20, experiment="b", layers=False))
    assert experiments_warning(one) is None
    assert experiments_warning([*one, other]) == "runs come from 2 experiments (a, b); drawn together"
