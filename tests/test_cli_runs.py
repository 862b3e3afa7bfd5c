"""`gradlab runs`: the table of run directories, submitted SLURM/submitit runs included."""

import json

from click.testing import CliRunner

from gradlab import runs
from gradlab.bench.synthetic_runs import make_run
from gradlab.cli.main import cli


def test_runs_lists_trained_and_submitted_runs(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "resnet", 8, steps=100, experiment="quick-digits")
    queued = root / "quick-digits" / "plain8-s0"
    queued.mkdir(parents=True)
    record = {"launcher": "slurm", "job_id": "4242_0", "submitted": "2026-11-29T22:00:00"}
    (queued / runs.SUBMITTED).write_text(json.dumps(record))
    out = CliRunner().invoke(cli, ["runs", str(root)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    trained = next(line for line in lines if "resnet8" in line)
    assert "done" in trained and "100/100" in trained
    waiting = next(line for line in lines if "plain8-s0" in line)
    assert waiting.split()[:2] == ["quick-digits/plain8-s0", "submitted"]
    assert "slurm job 4242_0" in waiting
    # once the job starts, the run has a spec.json and is listed as a run, not as queued
    assert [p for p, _ in runs.queued_run_dirs(root)] == [queued]
    assert runs.queued_run_dirs(root / "quick-digits" / "resnet8-s0") == []


def test_runs_on_an_empty_folder_says_so(tmp_path):
    out = CliRunner().invoke(cli, ["runs", str(tmp_path)])
    assert out.exit_code == 0 and f"no runs under {tmp_path}" in out.output
