"""A run is never shown as done with rows missing, nor hidden: the last flush failing on a
full disk (a real file-size limit), a lost spec.json, a truncated layers table. Real faults
on real files, each tried through the commands a user runs."""

from __future__ import annotations

import math
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn as nn
from click.testing import CliRunner

import gradlab
from gradlab import runs
from gradlab.cli.main import cli
from gradlab.file_io import read_json
from tests.damage import truncate_file

LAST_FLUSH_FAILS = """
import sys, torch, gradlab
torch.manual_seed(0)
model = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(4)])
opt = torch.optim.SGD(model.parameters(), 0.01)
rec = gradlab.watch(model, run_dir=sys.argv[1], every=1, buffer_steps=256)
try:
    for step in range(100):
        loss = model(torch.randn(4, 8)).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step(); rec.step(step)
        if step == 9:
            rec.flush()  # a small first part fits; the last one (90 steps) does not
finally:
    rec.stop()
"""


def _limited(limit_bytes: int):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return limit


def test_a_failed_last_flush_marks_the_run_failed_at_the_last_step_on_disk(tmp_path):
    run_dir = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-c", LAST_FLUSH_FAILS, str(run_dir)], capture_output=True, text=True,
                          timeout=120, preexec_fn=_limited(16_000), env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1 and "File too large" in proc.stderr, proc.stderr[-2000:]
    status = read_json(run_dir / runs.STATUS)
    layers = runs.read_run(run_dir).layers
    assert int(layers["step"].max()) == 9  # the rows of steps 10..99 never reached the disk
    assert status["state"] == runs.FAILED and status["step"] == 9
    assert "File too large" in status["message"]
    listed = CliRunner().invoke(cli, ["runs", str(tmp_path)]).output
    assert "failed" in listed and "done" not in listed


def test_the_same_loop_with_room_ends_done_with_every_step(tmp_path):
    run_dir = tmp_path / "r"
    subprocess.run([sys.executable, "-c", LAST_FLUSH_FAILS, str(run_dir)], check=True, timeout=120,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    status = read_json(run_dir / runs.STATUS)
    assert status["state"] == runs.DONE and status["step"] == 99
    assert int(runs.read_run(run_dir).layers["step"].max()) == 99


def _trained(tmp_path: Path, steps: int = 6) -> Path:
    result = CliRunner().invoke(cli, ["train", "resnet8", "--preset", "quick", "--steps", str(steps),
                                      "--runs-dir", str(tmp_path), "--wandb", "disabled"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (run_dir,) = runs.find_run_dirs(tmp_path)
    return run_dir


def test_a_run_that_lost_its_spec_is_named_by_runs_report_lesion_and_train(tmp_path):
    run_dir = _trained(tmp_path / "runs")
    (run_dir / runs.SPEC).unlink()
    lost = f"{run_dir} has lost its spec.json (it still holds checkpoint.pt, layers.parquet, metrics.parquet"
    runner = CliRunner()
    listed = runner.invoke(cli, ["runs", str(tmp_path / "runs")])
    assert listed.exit_code == 0 and "unreadable" in listed.output and lost in listed.output
    report = runner.invoke(cli, ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")])
    assert report.exit_code == 1 and lost in report.output and "Traceback" not in report.output
    lesion = runner.invoke(cli, ["lesion", str(tmp_path / "runs"), "--out", str(tmp_path / "les")])
    assert lesion.exit_code == 1 and lost in lesion.output
    again = runner.invoke(cli, ["train", "resnet8", "--preset", "quick", "--steps", "6", "--runs-dir",
                                str(tmp_path / "runs"), "--wandb", "disabled"])  # fmt: skip
    assert again.exit_code == 1 and lost in again.output
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt", "layers.parquet", "metrics.parquet",
                                                         "status.json"]  # left untouched  # fmt: skip


def test_an_intact_run_is_listed_without_a_word_of_damage(tmp_path):
    run_dir = _trained(tmp_path)
    listed = CliRunner().invoke(cli, ["runs", str(tmp_path)]).output
    assert "done" in listed and "unreadable" not in listed and "lost" not in listed
    assert runs.lost_spec(run_dir) is None


def test_a_truncated_layers_table_is_listed_damaged_and_not_taken_as_finished(tmp_path):
    run_dir = _trained(tmp_path)
    truncate_file(run_dir / runs.LAYERS)
    runner = CliRunner()
    listed = runner.invoke(cli, ["runs", str(tmp_path)]).output
    assert "unreadable" in listed and "layers.parquet cannot be read as Parquet" in listed
    again = runner.invoke(cli, ["train", "resnet8", "--preset", "quick", "--steps", "6", "--runs-dir",
                                str(tmp_path), "--wandb", "disabled"])  # fmt: skip
    assert again.exit_code == 1 and "already finished" not in again.output
    assert "layers.parquet cannot be read" in again.output and f"move {run_dir} aside" in again.output


def test_a_loss_of_1e19_with_non_finite_statistics_is_diverged_not_done(tmp_path):
    result = CliRunner().invoke(cli, ["train", "resnet8", "--preset", "quick", "--steps", "30", "--lr", "50",
                                      "--runs-dir", str(tmp_path), "--wandb", "disabled", "--threads", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (run_dir,) = runs.find_run_dirs(tmp_path)
    run = runs.read_run(run_dir)
    assert run.metrics["train_loss"].dropna().map(math.isfinite).all()  # the loss never went non-finite
    status = run.status
    assert status["state"] == runs.DIVERGED and status["diverged_step"] == status["nonfinite"]["step"]
    assert "statistics became non-finite at step" in status["message"] and "loss stayed finite" in status["message"]


def test_the_same_net_at_a_sane_learning_rate_is_done(tmp_path):
    run_dir = _trained(tmp_path, steps=30)
    status = runs.read_run(run_dir).status
    assert status["state"] == runs.DONE and "nonfinite" not in status and status["message"] == ""


def _watched(run_dir, blow_up):
    """A user's loop whose net is made non-finite at step 3 by ``blow_up`` (weights or grads)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with gradlab.watch(model, run_dir=run_dir, every=1) as rec:
        for step in range(6):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            model.zero_grad()
            loss.backward()
            if step == 3:
                blow_up(model)
            rec.step(step)
    return runs.read_run(run_dir).status


def test_a_watched_run_whose_weights_go_non_finite_is_diverged(tmp_path):
    status = _watched(tmp_path / "r", lambda m: m[0].weight.data.fill_(float("nan")))
    assert status["state"] == runs.DIVERGED
    assert status["message"] == "statistics became non-finite at step 3 (first: weight in 0.weight): the run diverged"


def test_a_watched_run_with_only_a_skipped_non_finite_gradient_stays_done(tmp_path):
    # what a GradScaler's skipped step looks like: an Inf gradient, weights untouched
    status = _watched(tmp_path / "r", lambda m: m[2].weight.grad.fill_(float("inf")))
    assert status["state"] == runs.DONE and status["nonfinite"]["what"] == "grad" and status["message"] == ""
