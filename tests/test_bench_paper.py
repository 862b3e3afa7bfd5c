"""`gradlab bench paper`: every run trains at once, and the minutes follow from what was measured."""

import json

import pytest
from click.testing import CliRunner

from gradlab.bench.paper import _worker, estimate_minutes, run_paper
from gradlab.bench.workers import WorkerPool
from gradlab.cli.main import cli
from gradlab.errors import ConfigError


@pytest.mark.slow
def test_paper_times_every_run_and_extrapolates_to_64k_steps():
    result = run_paper(depths=(8,), families=("plain", "resnet"), batch_size=16, seconds=1.0, warmup=1,
                       device="cpu", images=256)
    s, runs = result["settings"], result["results"]
    assert list(runs) == ["plain8", "resnet8"] and s["runs"] == ["plain8", "resnet8"]
    assert s["recorded_steps"] == 305 and s["evaluations"] == 160  # 64k steps: default schedule, one eval per 400
    assert s["compile"] is False and s["compile_mode"] is None and s["threads_per_worker"] >= 1
    for r in runs.values():
        assert r["steps_shared"] >= 1 and r["elapsed_shared_s"] >= 0.9  # the whole shared window
        assert r["steps_per_s_shared"] == pytest.approx(r["steps_shared"] / r["elapsed_shared_s"])
        assert r["images_per_s_shared"] == pytest.approx(16 * r["steps_per_s_shared"])
        assert r["first_step_s"] > 0 and r["first_eval_s"] > 0 and r["compile_s"] is None
        assert r["recorded_step_s"] > 0 and r["eval_s"] > 0
        assert r["minutes_for_total"] == estimate_minutes(r, 64000, 305, 160)  # (its arithmetic: tested below)
    slowest = max(runs.values(), key=lambda r: r["minutes_for_total"])
    assert result["paper_compare_minutes"] == slowest["minutes_for_total"]
    assert runs[result["slowest"]] is slowest
    assert result["total_images_per_s_shared"] == pytest.approx(sum(r["images_per_s_shared"] for r in runs.values()))
    # all runs' 64k steps of 16 images at the total shared rate
    assert result["balanced_minutes"] == pytest.approx(2 * 64000 * 16 / result["total_images_per_s_shared"] / 60)


def test_the_minutes_of_a_run_add_its_measured_parts():
    run = {"first_step_s": 10.0, "first_eval_s": 2.0, "steps_per_s_shared": 50.0, "recorded_step_s": 0.5, "eval_s": 1.0}
    # 12 s to start, 63,695 shared steps at 50/s (1,273.9 s), 305 recorded steps of 0.5 s, 160 evaluations of 1 s
    assert estimate_minutes(run, 64000, 305, 160) == pytest.approx(1598.4 / 60)
    assert estimate_minutes({**run, "steps_per_s_shared": 100.0}, 64000, 305, 160) == pytest.approx(961.45 / 60)


@pytest.mark.slow
def test_paper_command_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "paper.json"
    result = CliRunner().invoke(cli, ["bench", "paper", "--depths", "8", "--families", "resnet", "--seconds", "0.5",
                                      "--warmup", "0", "--batch-size", "8", "--steps", "4000", "--device", "cpu",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["benchmark"] == "paper" and list(data["results"]) == ["resnet8"]
    # the evaluation cadence scales with --steps as in `gradlab compare --steps`: still 160 evaluations
    assert data["settings"]["total_steps"] == 4000 and data["settings"]["evaluations"] == 160
    minutes = data["paper_compare_minutes"]
    assert minutes == data["results"]["resnet8"]["minutes_for_total"] > 0
    assert "resnet8" in result.output and f"paper compare: about {minutes:.0f} min" in result.output


def test_paper_command_rejects_a_bad_depth_before_any_work():
    out = CliRunner().invoke(cli, ["bench", "paper", "--depths", "8,21"])
    assert out.exit_code != 0 and "6n+2" in out.output and "Traceback" not in out.output
    out = CliRunner().invoke(cli, ["bench", "paper", "--families", "plain,dense"])
    assert out.exit_code != 0 and "choose from plain, resnet" in out.output and "Traceback" not in out.output


def test_paper_rejects_a_bad_compile_mode():
    with pytest.raises(ConfigError, match="compile mode must be one of"):
        run_paper(depths=(8,), compile_mode="fastest", device="cpu")


def test_a_failing_worker_is_an_error_naming_it():
    pool = WorkerPool(_worker, [(None, 1, 0)], names=["broken8"])  # no spec: the worker fails at once
    try:
        with pytest.raises(RuntimeError, match=r"broken8 failed:(.|\n)*Traceback"):
            pool.recv(0)
    finally:
        pool.close()


@pytest.mark.slow
def test_a_users_mistake_inside_a_worker_is_a_clean_error(tmp_path):
    out = CliRunner().invoke(cli, ["bench", "paper", "--depths", "8", "--families", "plain", "--seconds", "1",
                                   "--warmup", "0", "--batch-size", "60000", "--device", "cpu"])
    assert out.exit_code != 0
    assert "plain8: batch size 60000 is larger than" in out.output and "--batch-size" in out.output
    assert "Traceback" not in out.output
