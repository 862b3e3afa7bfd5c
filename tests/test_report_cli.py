"""`gradlab report` through click's CliRunner."""

from __future__ import annotations

from click.testing import CliRunner

from gradlab import runs as R
from gradlab.cli.main import cli

from gradlab.bench import synthetic_runs as F
from tests import damage as D


def invoke(*args):
    return CliRunner().invoke(cli, ["report", *map(str, args)])


def test_report_command_builds_and_warns_about_damaged_runs(tmp_path):
    runs = tmp_path / "runs"
    F.make_run(runs, "plain", 20, layers=False)
    F.make_run(runs, "resnet", 20, layers=False)
    bad = F.make_run(runs, "plain", 56, layers=False)
    D.truncate_file(bad / R.METRICS)
    out = tmp_path / "out"
    result = invoke(runs, "--out", out, "--formats", "png")
    assert result.exit_code == 0, result.output
    assert "warning: unreadable run" in result.output and str(bad) in result.output
    assert f"report: {out / 'report.md'}" in result.output
    assert (out / "figures" / "curves.png").exists() and not (out / "figures" / "curves.pdf").exists()


def test_out_pointing_at_a_file_fails_clearly_and_leaves_it_alone(tmp_path):
    F.make_run(tmp_path / "runs", "plain", 20, layers=False)
    target = tmp_path / "existing.md"
    target.write_text("do not touch")
    result = invoke(tmp_path / "runs", "--out", target)
    assert result.exit_code != 0
    assert "is an existing file" in result.output and "Traceback" not in result.output
    assert target.read_text() == "do not touch"


def test_bad_formats_and_missing_runs_fail_clearly(tmp_path):
    F.make_run(tmp_path / "runs", "plain", 20, layers=False)
    result = invoke(tmp_path / "runs", "--out", tmp_path / "o", "--formats", "gif")
    assert result.exit_code != 0 and "unknown figure format" in result.output
    result = invoke(tmp_path / "nothing-here", "--out", tmp_path / "o")
    assert result.exit_code != 0 and "no readable runs" in result.output and "does not exist" in result.output
    result = invoke(tmp_path / "runs", "--style", "poster")
    assert result.exit_code != 0 and "poster" in result.output


def test_report_is_listed_in_help():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "report" in result.output
    result = CliRunner().invoke(cli, ["report", "--help"])
    assert result.exit_code == 0 and "--formats" in result.output and "--style" in result.output
