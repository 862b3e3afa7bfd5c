"""compare: planning, reuse of finished runs, bad input, the report at the end."""

import json

import pytest
from click.testing import CliRunner

from gradlab import runs
from gradlab.cli.main import cli
from gradlab.cli.options import parse_int_list
from gradlab.compare import compare, plan
from gradlab.families import parse as parse_families
from gradlab.config import load_preset, make_run_spec
from gradlab.errors import ConfigError, ModelError

SMALL = {"steps": 12, "recipe": {"batch_size": 32, "eval_every": 6, "checkpoint_every": 6}}


def test_plan_is_one_run_per_family_depth_seed_shallow_first():
    specs = plan(load_preset("quick"), (56, 20), ("plain", "resnet"), (0, 1))
    assert [s.name for s in specs] == [
        "plain20-s0", "plain20-s1", "resnet20-s0", "resnet20-s1",
        "plain56-s0", "plain56-s1", "resnet56-s0", "resnet56-s1",
    ]  # fmt: skip
    assert {s.experiment for s in specs} == {"quick-digits"}


def test_cifar_depths_that_collide_with_imagenet_names_get_the_cifar_net():
    (spec,) = plan(load_preset("quick"), (50,), ("resnet",), (0,))
    assert spec.model.name == "cifar-resnet50"


def test_bad_depths_and_families_are_clear_errors():
    with pytest.raises(ConfigError, match="'x' is not a whole number"):
        parse_int_list("20,x", "depths")
    with pytest.raises(ConfigError, match="twice"):
        parse_int_list("20,20", "depths")
    with pytest.raises(ConfigError, match="choose from plain, resnet"):
        parse_families("plain,dense")
    with pytest.raises(ModelError, match="6n\\+2"):
        plan(load_preset("quick"), (21,), ("resnet",), (0,))


@pytest.mark.slow
def test_compare_trains_then_reuses_finished_runs_and_reports(tmp_path):
    specs = plan(load_preset("quick"), (8,), ("plain", "resnet"), (0,), **SMALL)
    first = compare(specs, tmp_path / "runs", out=tmp_path / "report", formats=("png",), progress=False)
    assert first.outcomes == {"plain8-s0": "done", "resnet8-s0": "done"} and not first.failed
    assert (tmp_path / "report" / "report.md").exists() and (tmp_path / "report" / "table.md").exists()
    stamps = {d.name: (d / runs.METRICS).stat().st_mtime_ns for d in first.run_dirs}
    messages = []
    second = compare(specs, tmp_path / "runs", out=tmp_path / "report", formats=("png",), notify=messages.append)
    assert stamps == {d.name: (d / runs.METRICS).stat().st_mtime_ns for d in second.run_dirs}
    assert any("2 of 2 runs already finished" in m for m in messages)


@pytest.mark.slow
def test_a_diverged_run_is_reported_and_the_others_go_on(tmp_path):
    specs = plan(load_preset("quick"), (8,), ("plain", "resnet"), (0,), steps=12,
                 recipe={"batch_size": 32, "eval_every": 6, "checkpoint_every": 6, "lr": 1e6})
    result = compare(specs, tmp_path / "runs", out=tmp_path / "report", formats=("png",), progress=False)
    assert "diverged" in result.outcomes.values()
    assert (tmp_path / "report" / "report.md").exists()
    assert "diverged" in (tmp_path / "report" / "report.md").read_text()


def test_cli_compare_junk_depths_exit_nonzero_without_traceback(tmp_path):
    out = CliRunner().invoke(cli, ["compare", "--depths", "20,abc", "--preset", "quick", "--runs-dir", str(tmp_path)])
    assert out.exit_code != 0 and "'abc' is not a whole number" in out.output
    assert "Traceback" not in out.output and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_compare_with_two_jobs(tmp_path):
    out = CliRunner().invoke(cli, ["compare", "--depths", "8", "--preset", "quick", "--steps", "6", "--batch-size", "32",
                                   "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"),
                                   "--jobs", "2", "--formats", "png"])
    assert out.exit_code == 0, out.output
    states = {p.parent.name: json.loads(p.read_text())["state"] for p in (tmp_path / "runs").rglob(runs.STATUS)}
    assert states == {"plain8-s0": "done", "resnet8-s0": "done"}


def test_the_eta_weighs_runs_by_their_multiply_adds_not_their_depth():
    from gradlab.compare import cost

    preset = load_preset("quick")
    spec = {name: make_run_spec(name, preset) for name in ("resnet20", "resnet56", "resnet18")}
    assert cost(spec["resnet56"]) / cost(spec["resnet20"]) == pytest.approx(3.1, rel=0.03)  # 27 blocks against 9
    assert cost(spec["resnet18"]) > 30 * cost(spec["resnet20"])  # fewer layers, 224x224 inputs
    longer = make_run_spec("resnet20", preset, steps=600)
    assert cost(longer) == pytest.approx(2 * cost(spec["resnet20"]))


@pytest.mark.slow
def test_two_compares_on_one_runs_dir_share_the_runs_and_both_succeed(tmp_path):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "gradlab", "compare", "--depths", "8,14", "--preset", "quick", "--steps", "40",
           "--batch-size", "32", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"),
           "--formats", "png", "--wandb", "disabled", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "failed" not in err and "did not finish" not in err
    found = runs.load(tmp_path / "runs")
    assert sorted(r.name for r in found) == ["plain14-s0", "plain8-s0", "resnet14-s0", "resnet8-s0"]
    for run in found:  # each trained by one process, once: one row per evaluation
        assert run.state == runs.DONE and run.metrics["step"].is_unique, run.name
    assert "plain-14" in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.slow
def test_a_compare_that_waited_for_anothers_report_keeps_it(tmp_path):
    import threading
    import time

    from gradlab.run_lock import RunLock

    specs = plan(load_preset("quick"), (8,), ("plain", "resnet"), (0,), **SMALL)
    out = tmp_path / "report"
    compare(specs, tmp_path / "runs", out=out, formats=("png",), progress=False)
    lock = RunLock(out.parent, f".{out.name}.lock", doing="written").acquire()

    def the_other_compare():
        time.sleep(1.0)
        (out / "report.md").write_text("written by the other compare\n")
        lock.release()

    other = threading.Thread(target=the_other_compare)
    other.start()
    messages = []
    result = compare(specs, tmp_path / "runs", out=out, formats=("png",), progress=False, notify=messages.append)
    other.join()
    assert (out / "report.md").read_text() == "written by the other compare\n"  # not written twice
    assert any("waiting for" in m for m in messages) and any("kept" in m for m in messages)
    assert result.report_dir == out and result.report is None
