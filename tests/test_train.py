"""Training end to end on digits and synthetic data (CPU, seconds)."""

import json

import pandas as pd
import pytest
import torch

from gradlab import runs
from gradlab.callbacks import Callback
from gradlab.config import load_preset, make_run_spec
from gradlab.errors import RunDirError
from gradlab.file_io import write_json
from gradlab.train import train


def quick_spec(model="resnet8", steps=40, model_options=None, **recipe):
    recipe = {"eval_every": 10, "checkpoint_every": 20, "batch_size": 32, **recipe}
    return make_run_spec(model, load_preset("quick"), steps=steps, recipe=recipe, model_options=model_options)


def test_run_directory_round_trip(tmp_path):
    spec = quick_spec()
    result = train(spec, tmp_path, progress=False)
    assert result.state == runs.DONE and result.step == 40
    (run,) = runs.load(tmp_path)
    assert run.state == "done" and run.name == "resnet8-s0"
    assert run.spec["run"] == spec.to_dict()
    assert run.spec["model"]["family"] == "resnet" and run.spec["model"]["depth"] == 8
    assert run.spec["model"]["input_size"] == [1, 8, 8]  # the digits it trained on
    assert run.spec["data"]["train_size"] == 1437
    assert list(run.metrics["step"]) == [0, 10, 20, 30, 40]
    assert run.metrics["test_err"].between(0, 1).all()
    assert run.metrics["train_loss"].iloc[1:].notna().all()
    assert (tmp_path / "quick-digits" / "resnet8-s0" / runs.CHECKPOINT).exists()
    ckpt = torch.load(tmp_path / "quick-digits" / "resnet8-s0" / runs.CHECKPOINT, weights_only=True)
    assert ckpt["step"] == 40


def test_layers_parquet_holds_every_recorded_step_even_past_the_recorder_buffer(tmp_path):
    """The recorder flushes by itself every 64 recorded steps; none of them may be lost."""
    from gradlab.recorder import default_schedule

    result = train(quick_spec(steps=70, eval_every=70, checkpoint_every=70), tmp_path, progress=False)
    layers = runs.read_run(result.run_dir).layers
    assert sorted(layers["step"].unique()) == default_schedule(70).steps(70) == list(range(70))


def test_training_error_falls_well_below_chance(tmp_path):
    result = train(quick_spec("resnet8", steps=120), tmp_path, progress=False)
    (run,) = runs.load(result.run_dir)
    assert run.final("train_err") < 0.3 and run.final("test_err") < 0.3  # chance is 0.9


def test_finished_run_is_reused_not_retrained(tmp_path):
    spec = quick_spec(steps=20)
    first = train(spec, tmp_path, progress=False)
    metrics = (first.run_dir / runs.METRICS).read_bytes()
    again = train(spec, tmp_path, progress=False)
    assert again.message == "already finished" and (first.run_dir / runs.METRICS).read_bytes() == metrics


def test_different_spec_never_overwrites_existing_run(tmp_path):
    train(quick_spec(steps=20), tmp_path, progress=False)
    run_dir = tmp_path / "quick-digits" / "resnet8-s0"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(RunDirError, match="recipe.steps"):
        train(quick_spec(steps=30), tmp_path, progress=False)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


class StopAt(Callback):
    """Interrupts training (as Ctrl-C would) at the evaluation of a given step."""

    def __init__(self, step):
        self.step = step

    def on_eval(self, run_dir, row):
        if row["step"] == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("options", [None, {"drop_path": 0.5}], ids=["resnet8", "stochastic-depth"])
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, options):
    spec = quick_spec(steps=40, model_options=options)  # checkpoints at 20 and 40
    full = train(spec, tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(spec, tmp_path / "b", progress=False, callbacks=[StopAt(30)])
    b = tmp_path / "b" / full.run_dir.relative_to(tmp_path / "a")
    assert json.loads((b / runs.STATUS).read_text())["state"] == "interrupted"
    resumed = train(spec, tmp_path / "b", progress=False)
    assert resumed.state == runs.DONE
    timing = ["images_per_s", "time_s"]
    pd.testing.assert_frame_equal(pd.read_parquet(full.run_dir / runs.METRICS).drop(columns=timing),
                                  pd.read_parquet(b / runs.METRICS).drop(columns=timing))
    if (full.run_dir / runs.LAYERS).exists():
        pd.testing.assert_frame_equal(pd.read_parquet(full.run_dir / runs.LAYERS), pd.read_parquet(b / runs.LAYERS))
    a_model = torch.load(full.run_dir / runs.CHECKPOINT, weights_only=True)["model"]
    b_model = torch.load(b / runs.CHECKPOINT, weights_only=True)["model"]
    for k in a_model:
        assert torch.equal(a_model[k], b_model[k]), k


def test_divergence_is_a_state_not_an_exception(tmp_path):
    spec = quick_spec("plain8", steps=30, lr=1e6)
    result = train(spec, tmp_path, progress=False)
    assert result.state == runs.DIVERGED
    status = json.loads((result.run_dir / runs.STATUS).read_text())
    assert status["state"] == "diverged" and 0 <= status["diverged_step"] < 30
    assert "non-finite" in status["message"]
    assert status["nonfinite"]["layer"] and status["nonfinite"]["step"] <= status["diverged_step"]


@pytest.mark.parametrize("record", [True, False])
def test_a_diverged_run_is_noted_at_the_step_its_status_names(tmp_path, record):
    from gradlab.report.collect import state_note

    result = train(quick_spec("plain8", steps=30, lr=1e6, record=record), tmp_path, progress=False)
    (run,) = runs.load(tmp_path)
    assert result.state == runs.DIVERGED
    assert state_note(run) == f"diverged @ step {run.status['diverged_step']}"


def test_a_run_that_died_before_its_final_status_is_repaired_by_a_rerun(tmp_path):
    spec = quick_spec(steps=20)
    done = train(spec, tmp_path, progress=False)
    metrics = runs.read_run(done.run_dir).metrics
    status = json.loads((done.run_dir / runs.STATUS).read_text())
    # the process died after the final checkpoint, before status.json said done
    write_json(done.run_dir / runs.STATUS, {**status, "state": runs.RUNNING, "pid": 2**22 + 1})
    assert runs.read_run(done.run_dir).state == "crashed"
    again = train(spec, tmp_path, progress=False)
    assert again.state == runs.DONE and again.step == 20
    repaired = runs.read_run(done.run_dir)
    assert repaired.state == runs.DONE and repaired.status["step"] == 20
    pd.testing.assert_frame_equal(repaired.metrics, metrics)  # the rerun added no row


def test_a_scheduler_exit_marks_the_run_interrupted_and_it_resumes(tmp_path):
    """submitit ends a preempted or timed-out job with sys.exit after requeueing it."""

    class Preempted(Callback):
        def on_eval(self, run_dir, row):
            if row["step"] == 20:
                raise SystemExit(-1)

    spec = quick_spec(steps=40)
    with pytest.raises(SystemExit):
        train(spec, tmp_path, progress=False, callbacks=[Preempted()])
    status = json.loads((tmp_path / "quick-digits" / "resnet8-s0" / runs.STATUS).read_text())
    assert status["state"] == runs.INTERRUPTED and "resume" in status["message"]
    result = train(spec, tmp_path, progress=False)
    assert result.state == runs.DONE and result.step == 40


class StopAfter(Callback):
    """Interrupts the run at the evaluation of ``step`` (after the checkpoint of that step)."""

    def __init__(self, step):
        self.step = step

    def on_eval(self, run_dir, row):
        if row["step"] == self.step + 10:
            raise KeyboardInterrupt


def _as_written_before_parts(run_dir):
    """The run directory as gradlab wrote it before append-only tables and the one writer:
    single Parquet files without the parts' metadata, spec.json without source, config and
    recorder, and rows past the last checkpoint (a process killed after flushing them)."""
    for table, late in ((runs.METRICS, {"step": 35}), (runs.LAYERS, {"step": 35})):
        frame = runs.read_run(run_dir).metrics if table == runs.METRICS else runs.read_run(run_dir).layers
        frame = pd.concat([frame, frame.tail(1).assign(**late)], ignore_index=True)
        (run_dir / table).unlink()
        frame.to_parquet(run_dir / table, index=False)
    spec = json.loads((run_dir / runs.SPEC).read_text())
    write_json(run_dir / runs.SPEC, {k: v for k, v in spec.items() if k not in ("source", "config", "recorder")})


def test_a_run_written_before_parts_resumes_into_the_uninterrupted_run(tmp_path):
    spec = quick_spec(steps=40, eval_every=10, checkpoint_every=10)
    reference = train(spec, tmp_path / "reference", progress=False).run_dir
    result_dir = tmp_path / "old" / spec.experiment / spec.name
    with pytest.raises(KeyboardInterrupt):  # stopped right after the checkpoint of step 20
        train(spec, tmp_path / "old", progress=False, callbacks=[StopAfter(20)])
    _as_written_before_parts(result_dir)
    resumed = train(spec, tmp_path / "old", progress=False)
    assert resumed.state == runs.DONE and resumed.step == 40
    a, b = runs.read_run(result_dir), runs.read_run(reference)
    timing = ["images_per_s", "time_s"]
    pd.testing.assert_frame_equal(a.metrics.drop(columns=timing), b.metrics.drop(columns=timing))
    pd.testing.assert_frame_equal(a.layers, b.layers)
    assert sorted(p.name for p in result_dir.iterdir()) == ["checkpoint.pt", "layers.parquet", "metrics.parquet",
                                                             "spec.json", "status.json"]  # compacted again


def test_a_live_run_is_read_from_its_parts(tmp_path):
    seen = {}

    class Peek(Callback):
        def on_eval(self, run_dir, row):
            if row["step"] == 20:  # before the checkpoint of step 20
                seen["run"] = runs.read_run(run_dir)
                seen["layers"] = seen["run"].layers  # read now (a Run reads its layers when asked)
                seen["files"] = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.parquet"))

    train(quick_spec(steps=40, eval_every=10, checkpoint_every=10), tmp_path, progress=False, callbacks=[Peek()])
    run = seen["run"]
    assert run.state == runs.RUNNING and list(run.metrics["step"]) == [0, 10]  # (step 20's row: written after)
    assert sorted(seen["layers"]["step"].unique()) == list(range(10))  # flushed at the checkpoint of step 10
    assert all(f.split("/")[0] in ("layers.parts", "metrics.parts") for f in seen["files"])
