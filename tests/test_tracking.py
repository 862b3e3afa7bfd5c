"""W&B tracking with the real wandb library in offline mode, read back from its files."""

import json
import logging
import os
import subprocess
import sys

import pytest

from gradlab import runs
from gradlab.callbacks import Callback
from gradlab.config import load_preset, make_run_spec
from gradlab.tracking import ID_FILE, TrackingError, WandbTracker, layer_key, resolve_mode
from gradlab.train import train
from tests.wandb_records import offline_runs, read_offline_run


def spec(steps=20, model="resnet8", **options):
    return make_run_spec(model, load_preset("quick"), steps=steps, model_options=options,
                         recipe={"batch_size": 32, "eval_every": 10, "checkpoint_every": 10})


def test_one_offline_wandb_run_per_gradlab_run_with_config_group_tags_and_metrics(tmp_path):
    tracker = WandbTracker("offline", project="gradlab-test", directory=tmp_path / "wb")
    result = train(spec(), tmp_path / "runs", progress=False, callbacks=[tracker])
    (folder,) = offline_runs(tmp_path / "wb")
    logged = read_offline_run(folder)
    run = logged["run"]
    assert run.run_group == "quick-digits" and run.job_type == "train"
    assert {"resnet", "depth8", "cifar", "digits"} <= set(run.tags)
    assert logged["config"]["name"] == "resnet8-s0" and logged["config"]["recipe"]["steps"] == 20
    evals = [h for h in logged["history"] if "test_err" in h]
    metrics = runs.read_run(result.run_dir).metrics
    assert [h["step"] for h in evals] == metrics["step"].tolist()
    assert evals[-1]["test_err"] == pytest.approx(metrics["test_err"].iloc[-1])
    layers = runs.read_run(result.run_dir).layers
    first = layers[(layers["stat"] == "grad_norm")].iloc[0]
    key = layer_key("grad_norm", first["index"], first["layer"])
    logged_values = [h[key] for h in logged["history"] if key in h and h["step"] == first["step"]]
    assert logged_values == [pytest.approx(first["value"])]
    assert logged["summary"]["final_test_err"] == pytest.approx(metrics["test_err"].iloc[-1])
    assert logged["summary"]["state"] == "done"
    assert json.loads((result.run_dir / ID_FILE).read_text())["id"] == run.run_id


def test_a_remedy_family_with_build_options_is_tagged_with_them(tmp_path):
    tracker = WandbTracker("offline", project="gradlab-test", directory=tmp_path / "wb")
    result = train(spec(10, "rezero8", drop_path=0.5), tmp_path / "runs", progress=False, callbacks=[tracker])
    (folder,) = offline_runs(tmp_path / "wb")
    logged = read_offline_run(folder)
    assert {"rezero", "depth8", "drop-path 0.5"} <= set(logged["run"].tags)
    assert logged["config"]["model"]["options"] == {"drop_path": 0.5}
    keys = {k for h in logged["history"] for k in h}
    gate = {"grad_norm/007.layer1.0.alpha", "weight_norm/007.layer1.0.alpha"}  # ReZero's gate, as any weight
    assert result.state == "done" and gate | {"branch_ratio/007.layer1.0"} <= keys


class StopAt(Callback):
    def on_eval(self, run_dir, row):
        if row["step"] == 10:
            raise KeyboardInterrupt


def test_a_resumed_run_resumes_the_same_wandb_run(tmp_path):
    wb = tmp_path / "wb"
    with pytest.raises(KeyboardInterrupt):
        train(spec(), tmp_path / "runs", progress=False, callbacks=[WandbTracker("offline", directory=wb), StopAt()])
    train(spec(), tmp_path / "runs", progress=False, callbacks=[WandbTracker("offline", directory=wb)])
    ids = [read_offline_run(f)["run"].run_id for f in offline_runs(wb)]
    assert len(ids) == 2 and ids[0] == ids[1]


def test_missing_credentials_in_online_mode_name_offline_and_sync(tmp_path):
    """Through the CLI, in a fresh process (wandb keeps session state once initialised)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), NETRC=str(tmp_path / "none"), WANDB_CONFIG_DIR=str(tmp_path / "cfg"))
    proc = subprocess.run([sys.executable, "-m", "gradlab", "train", "resnet8", "--preset", "quick", "--steps", "5",
                           "--runs-dir", str(tmp_path / "runs"), "--wandb", "online"],
                          env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "--wandb offline" in proc.stderr and "wandb sync" in proc.stderr and "wandb login" in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_mode_comes_from_flag_then_environment(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode(None) == "offline" and resolve_mode("disabled") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_mode(None) == "disabled"
    with pytest.raises(TrackingError, match="online, offline or disabled"):
        resolve_mode("loud")


class Broken(WandbTracker):
    def on_layers(self, run_dir, frame):
        raise ConnectionError("network went away")


def test_tracking_failure_mid_run_warns_and_training_goes_on(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        result = train(spec(), tmp_path / "runs", progress=False,
                       callbacks=[Broken("offline", directory=tmp_path / "wb")])
    assert result.state == runs.DONE
    assert "network went away" in caplog.text and "training goes on" in caplog.text


def test_report_run_logs_figures_as_images_and_the_table(tmp_path):
    from tests.damage import make_experiment
    from gradlab.report import build_report
    from gradlab.tracking import log_report

    make_experiment(tmp_path / "runs", depths=(8,), steps=100)
    report = build_report([tmp_path / "runs"], tmp_path / "report", formats=("png",))
    log_report(report, "degradation-test", mode="offline", directory=tmp_path / "wb")
    (folder,) = offline_runs(tmp_path / "wb")
    logged = read_offline_run(folder)
    assert logged["run"].job_type == "report" and logged["run"].run_group == "degradation-test"
    logged_keys = {k: v for row in logged["history"] for k, v in row.items()}
    assert logged_keys["figures/curves/_type"] == "image-file"
    assert logged_keys["figures/gradient_flow_init/_type"] == "image-file"
    assert logged_keys["results/_type"] == "table-file" and logged_keys["results/nrows"] == len(report.table)
    assert logged["summary"]["summary"] == " ".join(report.summary)
