"""gradlab.watch(model, run_dir=...) in someone's own loop: a run directory the report draws,
any nn.Module in forward order, include/exclude (CPU, real torch modules, seconds)."""

import json
import math

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from click.testing import CliRunner

import gradlab
from gradlab import runs
from gradlab import stat_names as S
from gradlab.cli.main import cli
from gradlab.errors import RecorderError, RunDirError, RunLockedError
from gradlab.report import build_report
from gradlab.run_lock import LOCK

# out_proj of MultiheadAttention does not run as a module; the recorder says so (tested below)
pytestmark = pytest.mark.filterwarnings("ignore:gradlab.*did not run as a module:RuntimeWarning")


class TinyTransformer(nn.Module):
    """Token classifier: embedding, a TransformerEncoder, a linear head (no zoo probe points)."""

    def __init__(self, layers=2, norm_first=False, width=16):
        super().__init__()
        self.embed = nn.Embedding(20, width)
        layer = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=True, norm_first=norm_first)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, 5)

    def forward(self, x):
        return self.head(self.enc(self.embed(x)).mean(1))


def batch(step, n=16):
    x = torch.randint(0, 20, (n, 6), generator=torch.Generator().manual_seed(step))
    return x, x[:, 0] % 5


def train(rec, model, steps, start=0, crash_at=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(start, start + steps):
        if step == crash_at:
            raise RuntimeError("out of patience")
        x, y = batch(step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        rec.step(step)
        opt.step()
        rec.log(step, train_loss=loss, lr=0.1)


def test_a_user_loop_writes_a_run_directory_that_the_report_draws(tmp_path):
    torch.manual_seed(0)
    model = TinyTransformer()
    run_dir = tmp_path / "runs" / "mine" / "post-LN"
    rec = gradlab.watch(model, every=2, dense_until=0, run_dir=run_dir, config={"lr": 0.1, "layers": 2})
    train(rec, model, 6)
    rec.flush()  # while it runs, the directory is readable and says so
    mid = runs.read_run(run_dir)
    assert mid.state == runs.RUNNING and len(mid.metrics) == 6 and set(mid.layers["step"]) == {0, 2, 4}
    train(rec, model, 4, start=6)
    rec.stop()
    run = runs.read_run(run_dir)
    assert run.state == runs.DONE and run.status["step"] == 9
    assert run.spec["source"] == runs.WATCH_SOURCE and run.spec["config"] == {"lr": 0.1, "layers": 2}
    assert run.spec["name"] == run.family == "post-LN" and run.spec["experiment"] == "mine"
    assert run.model["class"] == "TinyTransformer"
    assert run.model["params"] == sum(p.numel() for p in model.parameters())
    assert [p["name"] for p in run.model["parameters"]] == [n for n, _ in model.named_parameters()]
    assert list(run.metrics.columns) == ["step", "train_loss", "lr"] and run.metrics["step"].tolist() == list(range(10))
    assert sorted(run.layers["step"].unique()) == [0, 2, 4, 6, 8]
    frame = rec.frame()
    pd.testing.assert_frame_equal(run.layers, frame)  # what the user sees is what the report reads

    result = build_report([tmp_path / "runs"], tmp_path / "report", formats="png", workers=1)
    names = {p.stem for p in result.files if p.suffix == ".png"}
    assert {"gradient_flow_init", "gradient_flow_end", "gradient_heatmap", "activations", "scalars"} <= names
    assert "curves" not in names  # no errors logged: the scalars are drawn instead
    assert result.report.read_text(encoding="utf-8").splitlines()[4] == "## Findings"  # right after the title line
    flow = pd.read_csv(tmp_path / "report" / "data" / "gradient_flow.csv")
    weights = flow[(flow["stat"] == S.GRAD_NORM) & (flow["phase"] == "init")].sort_values("position")
    assert weights["layer"].iloc[0] == "embed.weight" and weights["layer"].iloc[-1] == "head.weight"
    assert "enc.layers.0.self_attn.in_proj_weight" in set(weights["layer"])  # along depth, not at -1


def test_reading_the_frame_again_rewrites_no_file_when_nothing_new_was_recorded(tmp_path):
    torch.manual_seed(0)
    model = TinyTransformer(layers=1)
    with gradlab.watch(model, every=1, run_dir=tmp_path / "run") as rec:
        train(rec, model, 2)
        rec.frame()
        before = _files(tmp_path / "run")  # every write is a new file (a part, or status.json replaced)
        rec.frame()
        rec.histograms()
        assert _files(tmp_path / "run") == before
        train(rec, model, 1, start=2)
        rec.frame()
        after = _files(tmp_path / "run")
        assert after[runs.STATUS] != before[runs.STATUS]  # new rows: status written again ...
        new = sorted(set(after) - set(before))  # ... and one new part of each table, nothing rewritten
        assert [p.split("/")[0] for p in new] == ["layers.parts", "metrics.parts"], new
    assert runs.read_run(tmp_path / "run").status["step"] == 2


def test_two_runs_side_by_side_are_labelled_by_their_names(tmp_path):
    for name, norm_first in (("post-LN", False), ("pre-LN", True)):
        torch.manual_seed(0)
        model = TinyTransformer(norm_first=norm_first)
        with gradlab.watch(model, every=3, run_dir=tmp_path / name) as rec:
            train(rec, model, 4)
    result = build_report([tmp_path / "post-LN", tmp_path / "pre-LN"], tmp_path / "out", formats="png", workers=1)
    table = pd.read_csv(tmp_path / "out" / "data" / "runs.csv")
    assert sorted(table["label"]) == ["post-LN", "pre-LN"]
    text = result.report.read_text()
    assert "`post-LN`" in text and "`pre-LN`" in text  # two runs, named apart in the runs table


def test_a_crash_inside_the_loop_leaves_a_readable_failed_run(tmp_path):
    model = TinyTransformer()
    with pytest.raises(RuntimeError, match="out of patience"):
        with gradlab.watch(model, every=1, run_dir=tmp_path / "run") as rec:
            train(rec, model, 10, crash_at=3)
    run = runs.read_run(tmp_path / "run")
    assert run.state == runs.FAILED and run.status["message"] == "RuntimeError: out of patience"
    assert sorted(run.layers["step"].unique()) == [0, 1, 2] and len(run.metrics) == 3
    assert not (tmp_path / "run" / LOCK).exists()
    result = build_report([tmp_path / "run"], tmp_path / "out", formats="png", workers=1)
    assert "failed" in result.report.read_text()


def test_an_existing_run_directory_needs_resume_or_overwrite(tmp_path):
    model = TinyTransformer()
    with gradlab.watch(model, every=1, run_dir=tmp_path / "run") as rec:
        train(rec, model, 4)
    before = (tmp_path / "run" / runs.LAYERS).read_bytes()
    with pytest.raises(RunDirError, match="already holds a run .*resume=True.*overwrite=True"):
        gradlab.watch(model, run_dir=tmp_path / "run")
    assert (tmp_path / "run" / runs.LAYERS).read_bytes() == before  # nothing lost
    with gradlab.watch(model, every=1, run_dir=tmp_path / "run", resume=True) as rec:
        assert rec.current_step == 4  # goes on after the last step written
        train(rec, model, 2, start=2)  # steps 2 and 3 again: the new rows replace the old
    run = runs.read_run(tmp_path / "run")
    assert sorted(run.layers["step"].unique()) == [0, 1, 2, 3] and run.metrics["step"].tolist() == [0, 1, 2, 3]
    (tmp_path / "run" / runs.LAYERS).write_bytes(b"damaged")  # a damaged run is replaced without being read,
    (tmp_path / "run" / runs.CHECKPOINT).write_bytes(b"a trainer's")  # with everything it held
    with gradlab.watch(model, every=1, run_dir=tmp_path / "run", overwrite=True) as rec:
        train(rec, model, 1)
    assert sorted(runs.read_run(tmp_path / "run").layers["step"].unique()) == [0]
    assert not (tmp_path / "run" / runs.CHECKPOINT).exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not empty and holds no gradlab run"):
        gradlab.watch(model, run_dir=tmp_path / "other")
    with pytest.raises(RecorderError, match="exclude each other"):
        gradlab.watch(model, run_dir=tmp_path / "x", resume=True, overwrite=True)
    with pytest.raises(RunDirError, match="is an existing file, not a folder"):
        gradlab.watch(model, run_dir=tmp_path / "other" / "notes.txt")
    with pytest.raises(RunDirError, match="lies under .*notes.txt, which is a file"):
        gradlab.watch(model, run_dir=tmp_path / "other" / "notes.txt" / "run")


def test_log_takes_numbers_and_tensors_and_refuses_anything_else():
    model = nn.Linear(3, 2)
    with gradlab.watch(model) as rec:
        rec.log(0, loss=torch.tensor(0.5), acc=1)
        with pytest.raises(RecorderError, match="not a number"):
            rec.log(1, loss="low")
        with pytest.raises(RecorderError, match="by name"):
            rec.log(1, step=3)
    assert rec.metrics().to_dict("records") == [{"step": 0, "loss": 0.5, "acc": 1.0}]


def test_default_points_follow_the_forward_order_of_a_transformer_layer():
    model = TinyTransformer(layers=1, norm_first=True)
    with pytest.warns(RuntimeWarning, match="self_attn.out_proj did not run as a module"):
        with gradlab.watch(model, every=1) as rec:
            train(rec, model, 1)
    index = {p.name: p.index for p in rec.probe_points}
    kinds = {p.name: p.kind for p in rec.probe_points}
    params = {p: i for p, i in zip(rec.frame()["layer"], rec.frame()["index"])}
    layer = "enc.layers.0."
    # registered: self_attn, linear1, linear2, norm1, norm2; run (norm_first): norm1, attention, norm2, linear1, linear2
    assert index[layer + "norm1"] < params[layer + "self_attn.in_proj_weight"] < index[layer + "self_attn.out_proj"]
    assert index[layer + "self_attn.out_proj"] < index[layer + "norm2"] < index[layer + "linear1"] < index[layer + "linear2"]
    assert params["embed.weight"] < index[layer + "norm1"] and index["head"] == max(index.values())
    assert kinds[layer + "norm1"] == "norm" and kinds[layer + "linear1"] == "fc"
    frame = rec.frame()
    assert frame[(frame["layer"] == layer + "self_attn.out_proj") & (frame["stat"] == S.ACT_STD)].empty
    assert (frame["index"] >= 0).all()  # every parameter has a place along depth


def test_include_and_exclude_choose_the_layers_watched():
    model = TinyTransformer()
    with gradlab.watch(model, every=1, include=["enc.layers.0.*"], exclude=["*norm*"]) as rec:
        train(rec, model, 1)
    layers = set(rec.frame()["layer"])
    assert layers and all(name.startswith("enc.layers.0.") and "norm" not in name for name in layers)
    assert "enc.layers.0.linear1.weight" in layers and "enc.layers.0.linear1" in layers
    with pytest.raises(RecorderError, match="leave nothing to watch.*enc.layers.0"):
        gradlab.watch(model, include="decoder.*")
    with pytest.raises(RecorderError, match="glob patterns"):
        gradlab.watch(model, exclude=[3])


def test_grad_weight_ratio_is_nan_where_the_weight_is_zero():
    model = nn.Sequential(nn.Linear(4, 3))
    nn.init.zeros_(model[0].bias)
    with gradlab.watch(model, every=1) as rec:
        model(torch.randn(5, 4)).pow(2).sum().backward()
        rec.step()
    df = rec.frame()
    ratio = df[df["stat"] == S.GRAD_WEIGHT_RATIO].set_index("layer")["value"]
    assert math.isnan(ratio["0.bias"]) and math.isfinite(ratio["0.weight"])


def test_spec_json_is_plain_json(tmp_path):
    model = TinyTransformer()
    with gradlab.watch(model, every=1, run_dir=tmp_path / "run", config={"note": "x"}) as rec:
        train(rec, model, 1)
    spec = json.loads((tmp_path / "run" / runs.SPEC).read_text())
    assert spec["recorder"]["schedule"] == {"every": 1, "dense_until": 100, "dense_every": 1}
    assert spec["env"]["torch"] == torch.__version__


@pytest.mark.slow
def test_zoo_runs_and_user_runs_share_one_report(tmp_path):
    from gradlab.bench import synthetic_runs

    synthetic_runs.make_run(tmp_path / "runs", "plain", 20, n_records=6)
    synthetic_runs.make_run(tmp_path / "runs", "resnet", 20, n_records=6)
    model = TinyTransformer()
    with gradlab.watch(model, every=2, run_dir=tmp_path / "runs" / "mine" / "tiny") as rec:
        train(rec, model, 4)
    result = build_report([tmp_path / "runs"], tmp_path / "out", formats="png", workers=1)
    table = pd.read_csv(tmp_path / "out" / "data" / "runs.csv")
    assert sorted(table["label"]) == ["ResNet-20", "plain-20", "tiny"]
    flow = pd.read_csv(tmp_path / "out" / "data" / "gradient_flow.csv")
    assert set(flow["label"]) == {"ResNet-20", "plain-20", "tiny"}
    assert any("degradation" in s or "ResNet-20" in s for s in result.summary)


def test_trackers_follow_a_user_run(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gradlab.tracking import TensorBoardTracker, layer_key

    model = TinyTransformer()
    with gradlab.watch(model, every=2, run_dir=tmp_path / "runs" / "exp" / "tiny",
                       callbacks=[TensorBoardTracker(tmp_path / "tb")]) as rec:  # fmt: skip
        train(rec, model, 4)
    events = EventAccumulator(str(tmp_path / "tb" / "exp" / "tiny"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert "metrics/train_loss" in tags
    head = rec.frame().query("stat == 'grad_norm' and layer == 'head.weight'")
    key = layer_key("grad_norm", int(head["index"].iloc[0]), "head.weight")
    assert [e.step for e in events.Scalars(key)] == head["step"].tolist()
    assert events.Scalars(key)[-1].value == pytest.approx(head["value"].iloc[-1], rel=1e-6)


def _files(run_dir) -> dict:
    """Every file under a run directory (but its lock) -> its inode."""
    return {str(p.relative_to(run_dir)): p.stat().st_ino for p in run_dir.rglob("*") if p.is_file() and p.name != LOCK}


HOLDER = """
import sys, time, torch, gradlab
model = torch.nn.Linear(4, 2)
with gradlab.watch(model, run_dir=sys.argv[1], every=1) as rec:
    model(torch.randn(2, 4)).sum().backward()
    rec.step(0)
    rec.flush()
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_run_another_process_writes_is_refused_as_busy_not_as_one_to_resume(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        for resume in (False, True):
            with pytest.raises(RunLockedError, match=f"run is being trained by pid {holder.pid} .*wait for it") as e:
                gradlab.watch(nn.Linear(4, 2), run_dir=tmp_path / "run", resume=resume)
            assert "resume=True" not in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    listed = CliRunner().invoke(cli, ["runs", str(tmp_path)]).output
    assert " 0 " in listed and "0/0" not in listed  # a loop of one's own plans no total: the step alone


def test_a_run_belongs_to_its_folder_or_to_the_experiment_it_is_given(tmp_path):
    from gradlab.run_writer import RunWriter

    def run(run_dir, **options):
        torch.manual_seed(0)
        model = TinyTransformer(layers=1)
        with gradlab.watch(model, every=1, run_dir=run_dir, **options) as rec:
            train(rec, model, 1)
        return json.loads((run_dir / runs.SPEC).read_text())["experiment"]

    assert run(tmp_path / "sweep" / "a") == "sweep"
    assert run(tmp_path / "sweep" / "b", experiment="lr-study") == "lr-study"
    assert run(tmp_path / "sweep" / "b", resume=True) == "lr-study"  # a resumed run keeps it
    with pytest.raises(RecorderError, match="name, experiment, config, resume, overwrite and callbacks describe"):
        gradlab.watch(TinyTransformer(layers=1), run_dir=RunWriter(tmp_path / "w"), experiment="x")
