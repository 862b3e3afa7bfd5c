"""`gradlab check`: the table, JSON, exit status by severity, thresholds from the command line
and from TOML, and one line for every bad input."""

from __future__ import annotations

import json

from click.testing import CliRunner

from gradlab import stat_names as S
from gradlab.cli.main import cli
from tests.findings_runs import along_depth, write_run
from tests.test_findings_rules import healthy


def runs(tmp_path):
    stats, loss = healthy()
    write_run(tmp_path, "ok", stats, loss)
    stats[S.ACT_GRAD_NORM] = along_depth(2.0, n_steps=30)  # 128x: a vanishing-gradient warning
    write_run(tmp_path, "bad", stats, loss)
    return tmp_path


def check(*args):
    return CliRunner().invoke(cli, ["check", *map(str, args)])


def test_the_table_names_rule_run_layers_steps_and_evidence(tmp_path):
    result = check(runs(tmp_path))
    assert result.exit_code == 0, result.output  # a warning: below the default --fail-on error
    assert "WARNING vanishing_gradients  bad  steps 0–29" in result.output
    assert "where: l0 (#0), l1 (#1), l2 (#2)" in result.output and "evidence: Theil–Sen trend" in result.output
    assert " ok " not in result.output and result.output.rstrip().endswith("1 finding(s) in 2 run(s): 0 error, 1 warning, 0 info")


def test_the_exit_status_follows_fail_on(tmp_path):
    root = runs(tmp_path)
    assert check(root, "--fail-on", "warning").exit_code == 3
    assert check(root, "--fail-on", "never").exit_code == 0
    assert check(root / "ok", "--fail-on", "info").exit_code == 0
    assert "no findings in 1 run(s)" in check(root / "ok").output


def test_json_carries_every_field(tmp_path):
    (f,) = json.loads(check(runs(tmp_path), "--json").output)
    assert (f["rule"], f["severity"], f["run"], f["first_step"], f["last_step"]) == (
        "vanishing_gradients", "warning", "bad", 0, 29)
    assert f["where"][0] == {"layer": "l0", "position": 0} and f["figure"] == "gradient_flow"


def test_thresholds_from_the_command_line_and_from_toml(tmp_path):
    root = runs(tmp_path / "runs")
    assert "vanishing_gradients" not in check(root, "--set", "vanishing_gradients.warning=1000").output
    assert "ERROR   vanishing_gradients" in check(root, "--set", "vanishing_gradients.error=50").output
    toml = tmp_path / "rules.toml"
    toml.write_text("[vanishing_gradients]\nenabled = false\n")
    assert "no findings in 2 run(s)" in check(root, "--thresholds", toml).output
    toml.write_text("[vanishing_gradients]\nwarning = 1e3\n")
    assert "no findings" in check(root, "--thresholds", toml).output
    listed = check("--rules", "--set", "loss_spike.enabled=false", "--set", "dead_units.warning=0.7").output
    assert "loss_spike  (off):" in listed and "warning = 0.7  (fraction" in listed and "default 0.5 from" in listed


def test_bad_input_is_one_line(tmp_path):
    root = runs(tmp_path / "runs")
    toml = tmp_path / "rules.toml"
    for args, said in [
        (["--set", "nope.x=1"], "no rule named 'nope'; the rules are activation_trend, dead_units"),
        (["--set", "loss_spike.speed=1"], "rule loss_spike has no threshold 'speed'; its thresholds: factor, range, window"),
        (["--set", "loss_spike.factor=fast"], "'fast' is not a number"),
        (["--set", "loss_spike"], "write rule.key=value"),
        (["--set", "loss_spike.factor=nan"], "must be a finite number"),
        (["--thresholds", toml], "cannot be read as TOML"),
    ]:
        toml.write_text("[loss_spike\n")
        result = check(root, *args)
        assert result.exit_code == 1 and said in result.output and "Traceback" not in result.output, result.output
    result = check()
    assert result.exit_code == 1 and "give the runs to check" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = check(empty)
    assert result.exit_code == 1 and "no readable run under" in result.output


def test_a_damaged_run_is_skipped_with_a_warning_and_the_rest_checked(tmp_path):
    root = runs(tmp_path)
    (root / "ok" / "spec.json").write_text("{")
    result = check(root)
    assert "warning: skipped" in result.output and "vanishing_gradients  bad" in result.output
