"""TensorBoard tracking with the real tensorboard library, read back with its own EventAccumulator."""

import pickle
import time

import pandas as pd
import pytest
from click.testing import CliRunner

from gradlab import runs
from gradlab.callbacks import Callback
from gradlab.cli.main import cli
from gradlab.config import load_preset, make_run_spec
from gradlab.tracking import TensorBoardTracker, TrackingError, check_log_dir, layer_key
from gradlab.train import train

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

EXPERIMENT, NAME = "quick-digits", "resnet8-s0"


def spec(steps=20, eval_every=10):
    return make_run_spec("resnet8", load_preset("quick"), steps=steps,
                         recipe={"batch_size": 32, "eval_every": eval_every, "checkpoint_every": 10})


def read_events(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})  # 0: keep every event
    acc.Reload()
    return acc


def steps_values(acc, tag):
    events = acc.Scalars(tag)
    return [e.step for e in events], [e.value for e in events]


def assert_matches_run_dir(acc, run_dir):
    """Every metric and every layer statistic of the run, at the same steps, with the same values
    (TensorBoard keeps float32)."""
    run = runs.read_run(run_dir)
    for column in ("test_err", "train_err", "train_loss", "lr"):
        rows = run.metrics.dropna(subset=[column])
        steps, values = steps_values(acc, f"metrics/{column}")
        assert steps == rows["step"].tolist(), column
        assert values == pytest.approx(rows[column].tolist(), rel=1e-6)
    layers = run.layers
    keys = [layer_key(s, i, l) for s, i, l in zip(layers["stat"], layers["index"], layers["layer"])]
    assert set(keys) <= set(acc.Tags()["scalars"])
    grad = layers[layers["stat"] == "grad_norm"]
    first = grad.iloc[0]
    key = layer_key("grad_norm", first["index"], first["layer"])
    one = grad[(grad["layer"] == first["layer"])]
    steps, values = steps_values(acc, key)
    assert steps == one["step"].tolist()
    assert values == pytest.approx(one["value"].tolist(), rel=1e-6)


def texts(acc, tag):
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(f"{tag}/text_summary")]


def test_one_folder_per_run_with_metrics_layer_statistics_spec_and_end(tmp_path):
    tracker = TensorBoardTracker(tmp_path / "tb")
    result = train(spec(), tmp_path / "runs", progress=False, callbacks=[tracker])
    folder = tmp_path / "tb" / EXPERIMENT / NAME
    acc = read_events(folder)
    tags = acc.Tags()["scalars"]
    assert "metrics/test_err" in tags and "metrics/step" not in tags
    assert any(t.startswith("grad_norm/000.") for t in tags) and any(t.startswith("act_std/") for t in tags)
    assert_matches_run_dir(acc, result.run_dir)
    ((_, spec_text),) = texts(acc, "spec")
    assert '"name": "resnet8-s0"' in spec_text
    assert texts(acc, "end") == [(20, "**done**")]
    assert tracker.writer is None  # closed at the end of the run


class StopAt(Callback):
    def on_eval(self, run_dir, row):
        if row["step"] == 15:
            raise KeyboardInterrupt


def test_a_resumed_run_appends_to_the_same_folder_and_hides_the_steps_trained_again(tmp_path):
    """Stopped at step 15 after the checkpoint at 10, resumed from 10: the curves show each step once."""
    tb = tmp_path / "tb"
    with pytest.raises(KeyboardInterrupt):
        train(spec(eval_every=5), tmp_path / "runs", progress=False, callbacks=[TensorBoardTracker(tb), StopAt()])
    # event files are named by the second they were opened and read in name order
    time.sleep(1.02 - time.time() % 1)
    result = train(spec(eval_every=5), tmp_path / "runs", progress=False, callbacks=[TensorBoardTracker(tb)])
    folder = tb / EXPERIMENT / NAME
    assert [p.parent for p in tb.rglob("events.out.tfevents.*")] == [folder, folder]
    acc = read_events(folder)
    assert steps_values(acc, "metrics/test_err")[0] == [0, 5, 10, 15, 20]
    assert_matches_run_dir(acc, result.run_dir)
    assert len(texts(acc, "spec")) == 1
    # what the TensorBoard app reads (this accumulator also purges text): the interruption at 15 is hidden
    app = plugin_event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
    app.Reload()
    assert texts(app, "end") == [(20, "**done**")]


def test_cli_train_with_tensorboard(tmp_path):
    out = CliRunner().invoke(cli, ["train", "resnet8", "--preset", "quick", "--steps", "20", "--batch-size", "32",
                                   "--tensorboard", str(tmp_path / "tb"), "--runs-dir", str(tmp_path / "runs"),
                                   "--wandb", "disabled"])
    assert out.exit_code == 0, out.output
    acc = read_events(tmp_path / "tb" / EXPERIMENT / NAME)
    assert_matches_run_dir(acc, tmp_path / "runs" / EXPERIMENT / NAME)


@pytest.mark.slow
def test_cli_compare_with_tensorboard_writes_one_folder_per_run(tmp_path):
    out = CliRunner().invoke(cli, ["compare", "--depths", "8", "--preset", "quick", "--steps", "6", "--batch-size", "32",
                                   "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"),
                                   "--formats", "png", "--tensorboard", str(tmp_path / "tb"), "--wandb", "disabled"])
    assert out.exit_code == 0, out.output
    folders = {p.parent.relative_to(tmp_path / "tb").as_posix() for p in (tmp_path / "tb").rglob("events.out.*")}
    assert folders == {f"{EXPERIMENT}/plain8-s0", f"{EXPERIMENT}/resnet8-s0"}


def test_cli_refuses_a_file_as_the_tensorboard_folder_before_training(tmp_path):
    taken = tmp_path / "tb"
    taken.write_text("not a folder")
    out = CliRunner().invoke(cli, ["train", "resnet8", "--preset", "quick", "--steps", "20",
                                   "--tensorboard", str(taken), "--runs-dir", str(tmp_path / "runs")])
    assert out.exit_code != 0
    assert isinstance(out.exception, SystemExit) and "Traceback" not in out.output
    assert f"{taken} is an existing file" in out.output and "give a folder" in out.output
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_a_folder_below_a_file_is_refused_and_a_missing_one_is_fine(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(TrackingError, match="which is a file"):
        check_log_dir(tmp_path / "taken" / "tb")
    assert check_log_dir(tmp_path / "new" / "tb") == tmp_path / "new" / "tb"


def test_a_failing_call_closes_the_event_file_and_the_tracker_pickles(tmp_path):
    run_dir = tmp_path / "runs" / EXPERIMENT / NAME
    tracker = TensorBoardTracker(tmp_path / "tb")
    tracker.on_start(run_dir, {"experiment": EXPERIMENT, "name": NAME}, resumed=False)
    assert tracker.writer is not None
    assert pickle.loads(pickle.dumps(tracker)).writer is None  # worker processes and submitit jobs
    with pytest.raises(KeyError):
        tracker.on_layers(run_dir, pd.DataFrame({"step": [0], "value": [1.0]}))  # no stat/index/layer columns
    assert tracker.writer is None
    tracker.on_eval(run_dir, {"step": 0, "test_err": 0.5})  # switched off: nothing to write to, no error
