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


DAMAGE = {  # a run's file -> bytes that once gave a traceback (and stopped the whole listing)
    "non-UTF-8 spec": (runs.SPEC, b'{"name": "\xff\xfe"}'),
    "model is a number": (runs.SPEC, b'{"name": "x", "model": 5}'),
    "step is text": (runs.STATUS, b'{"state": "done", "step": "abc", "total_steps": 100}'),
    "non-UTF-8 status": (runs.STATUS, b"\x80\x81"),
}


def test_a_damaged_run_is_marked_and_the_others_are_listed(tmp_path):
    root = tmp_path / "runs"
    damaged = {}
    for depth, (case, (name, data)) in zip((14, 20, 26, 32), DAMAGE.items()):
        path = make_run(root, "plain", depth, steps=100, experiment="quick-digits")
        (path / name).write_bytes(data)
        damaged[path.name] = case
    make_run(root, "resnet", 8, steps=100, experiment="quick-digits")
    out = CliRunner().invoke(cli, ["runs", str(root)])
    assert out.exit_code == 0 and "Traceback" not in out.output, out.output
    lines = out.output.splitlines()
    assert any("resnet8-s0" in line and "done" in line for line in lines)
    for name, case in damaged.items():
        (line,) = [line for line in lines if name in line]
        assert "unreadable" in line, (case, line)
    report = CliRunner().invoke(cli, ["report", str(root), "--out", str(tmp_path / "rep"), "--formats", "png"])
    assert report.exit_code == 0 and "Traceback" not in report.output, report.output
    assert (tmp_path / "rep" / "report.md").exists()


def test_runs_are_listed_by_experiment_then_depth_not_as_text(tmp_path):
    root = tmp_path / "runs"
    for depth in (14, 8, 110):
        make_run(root, "plain", depth, steps=100, experiment="quick-digits")
    long_name = make_run(root, "resnet", 8, steps=100, experiment="an-experiment-with-a-rather-long-name")
    out = CliRunner().invoke(cli, ["runs", str(root)])
    names = [line.split()[0] for line in out.output.splitlines()[2:]]
    assert names == [f"an-experiment-with-a-rather-long-name/{long_name.name}", "quick-digits/plain8-s0",
                     "quick-digits/plain14-s0", "quick-digits/plain110-s0"]
    header, rule, *rows = out.output.splitlines()
    assert len({row.index(" done") for row in rows}) == 1  # one column, however long the names
