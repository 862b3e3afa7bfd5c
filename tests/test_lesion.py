"""Lesion study (gradlab.analyses.lesion): known answers on tiny trained runs and on untrained
zoo models, the CLI, bad input."""

import copy
import json
import math
import shutil

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from click.testing import CliRunner

from gradlab import models, runs
from gradlab.analysis_dirs import read_analysis
from gradlab.cli.main import cli
from gradlab.config import load_preset, make_run_spec
from gradlab.errors import ConfigError, RunDirError
from gradlab.analyses.lesion import collect_runs, deleted, deletions, lesion, unit_shapes
from gradlab.train import train
from tests.damage import truncate_file

STEPS = 60


def tiny(model):
    recipe = {"eval_every": STEPS, "checkpoint_every": STEPS, "batch_size": 32, "record": False}
    return make_run_spec(model, load_preset("quick"), steps=STEPS, recipe=recipe)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """runs/quick-digits with a trained resnet14 and plain14 (digits, CPU, a few seconds)."""
    root = tmp_path_factory.mktemp("runs")
    for model in ("resnet14", "plain14"):
        assert train(tiny(model), root, progress=False).state == runs.DONE
    return root / "quick-digits"


@pytest.fixture(scope="module")
def result(experiment):
    found, warnings = collect_runs([experiment])
    assert not warnings
    return lesion(found, progress=False)


@pytest.fixture(scope="module")
def block_result(experiment):
    return lesion(collect_runs([experiment])[0], unit="block", progress=False)


def rows(result, run):
    t = result["lesion"]
    return t[t["run"] == run].sort_values("index").reset_index(drop=True)


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_intact_error_is_the_runs_own_final_test_error(result, experiment):
    for _, row in result["runs"].iterrows():
        run = runs.read_run(experiment / row["run"])
        assert row["intact_err"] == pytest.approx(run.final("test_err"), abs=1e-12)
        assert row["step"] == STEPS


@pytest.mark.parametrize("unit", ["layer", "block"])
def test_every_residual_block_is_deleted_and_downsampling_ones_are_marked(result, block_result, unit):
    r = rows(result if unit == "layer" else block_result, "resnet14-s0")
    assert list(r["block"]) == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1"]
    assert (r["unit"] == "block").all() and list(r["index"]) == list(r["block_index"]) == [1, 2, 3, 4, 5, 6]
    assert list(r["layer"]) == list(r["block"])
    assert list(r["changes_shape"]) == [False, False, True, False, True, False]
    assert r["deleted"].all() and r["test_err"].between(0, 1).all()


def test_plain_layers_are_deleted_exactly_where_they_keep_the_shape(result):
    """plain-14 = stem conv, 6 blocks of 2 convs, fc: block layers are weighted layers 2..13; the
    strided first convs of stages 2 and 3 (16->32, 32->64 channels) cannot be replaced by x."""
    p = rows(result, "plain14-s0")
    assert (p["unit"] == "layer").all() and list(p["index"]) == list(range(2, 14))
    assert list(p["layer"]) == [f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in (0, 1) for c in (1, 2)]
    assert list(p["block_index"]) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    shape = ["layer2.0.conv1", "layer3.0.conv1"]
    assert list(p.loc[p["changes_shape"], "layer"]) == shape
    assert list(p["deleted"]) == [not c for c in p["changes_shape"]] and p["deleted"].sum() == 10
    assert p.loc[~p["deleted"], "test_err"].isna().all()
    deleted_rows = p[p["deleted"]]
    assert (deleted_rows["test_err"] != deleted_rows["intact_err"]).all()
    run = result["runs"].set_index("run").loc["plain14-s0"]
    assert (run["unit"], run["blocks"], run["units"], run["deleted"]) == ("layer", 6, 12, 10)
    assert result.settings["unit"] == {"plain": "layer", "resnet": "block"}


def test_plain_unit_block_gives_the_block_rows(block_result):
    p = rows(block_result, "plain14-s0")
    assert (p["unit"] == "block").all() and list(p["layer"]) == list(p["block"])
    assert list(p["index"]) == list(p["block_index"]) == [1, 2, 3, 4, 5, 6]
    assert list(p["changes_shape"]) == [False, False, True, False, True, False]
    assert list(p["deleted"]) == [not c for c in p["changes_shape"]]
    assert p.loc[p["changes_shape"], "test_err"].isna().all()
    deleted = p[p["deleted"]]
    assert (deleted["test_err"] != deleted["intact_err"]).all()


def test_a_zero_residual_branch_deleted_leaves_the_error_exactly_unchanged(experiment, tmp_path):
    """A block whose F(x) is exactly zero (last BN scale and shift zero) is the identity already."""
    run_dir = tmp_path / "exp" / "resnet14-s0"
    shutil.copytree(experiment / "resnet14-s0", run_dir)
    state = torch.load(run_dir / runs.CHECKPOINT, weights_only=True)
    for block in ("layer1.0", "layer3.0"):
        state["model"][f"{block}.bn2.weight"].zero_()
        state["model"][f"{block}.bn2.bias"].zero_()
    torch.save(state, run_dir / runs.CHECKPOINT)
    r = rows(lesion(collect_runs([run_dir])[0], progress=False), "resnet14-s0")
    zeroed = r[r["block"].isin(["layer1.0", "layer3.0"])]
    assert (zeroed["test_err"] == zeroed["intact_err"]).all()
    other = r[r["block"] == "layer2.0"]
    assert (other["test_err"] != other["intact_err"]).all()  # the check can fail


def test_cli_writes_next_to_the_runs_and_draws_the_figure(experiment):
    result = CliRunner().invoke(cli, ["lesion", str(experiment), "--formats", "png"])
    assert result.exit_code == 0, result.output
    out = experiment / "lesion"
    analysis = read_analysis(out)
    assert analysis.kind == "lesion" and len(analysis.tables["runs"]) == 2
    assert (out / "figures" / "lesion.png").stat().st_size > 10_000
    assert "Lesion ResNet-14 (one block at a time)" in result.output
    assert "Lesion plain-14 (one layer at a time)" in result.output and "over 10 layers" in result.output
    assert analysis.settings["unit"] == {"plain": "layer", "resnet": "block"}
    assert [r.name for r in runs.load(experiment)] == ["plain14-s0", "resnet14-s0"]  # runs untouched, no new run


def test_cli_plain_unit_block_round_trip(experiment, block_result, tmp_path):
    out = tmp_path / "blocks"
    result = CliRunner().invoke(cli, ["lesion", str(experiment), "--plain-unit", "block", "--out", str(out),
                                      "--formats", "png"])  # fmt: skip
    assert result.exit_code == 0, result.output
    analysis = read_analysis(out)
    assert analysis.settings["unit"] == {"plain": "block", "resnet": "block"}
    table = analysis.tables["lesion"].sort_values(["run", "index"]).reset_index(drop=True)
    expected = block_result["lesion"].sort_values(["run", "index"]).reset_index(drop=True)
    assert table[["run", "unit", "index", "layer", "deleted"]].equals(expected[["run", "unit", "index", "layer",
                                                                                "deleted"]])  # fmt: skip
    assert table["test_err"].equals(expected["test_err"])  # NaN where not deleted, the same errors elsewhere
    assert "Lesion plain-14 (one block at a time)" in result.output
    assert (out / "figures" / "lesion.png").is_file()


def test_unknown_units_are_refused(experiment):
    with pytest.raises(ConfigError, match="layer, block"):
        lesion(collect_runs([experiment / "plain14-s0"])[0], unit="neuron", progress=False)
    result = CliRunner().invoke(cli, ["lesion", str(experiment), "--plain-unit", "neuron"])
    assert result.exit_code != 0 and "neuron" in result.output and "Traceback" not in result.output


def copy_run(experiment, tmp_path, name="resnet14-s0"):
    dest = tmp_path / "exp" / name
    shutil.copytree(experiment / name, dest, ignore=shutil.ignore_patterns("lesion"))
    return dest


@pytest.mark.parametrize("breakage, message", [
    ("no_checkpoint", "has no checkpoint.pt"),
    ("interrupted", "is interrupted"),
    ("diverged", "diverged"),
    ("family", "plain or residual"),
    ("imagefolder", "in-memory datasets only"),
])  # fmt: skip
def test_cli_refuses_an_unusable_run_without_traceback_or_writes(experiment, tmp_path, breakage, message):
    run_dir = copy_run(experiment, tmp_path)
    if breakage == "no_checkpoint":
        (run_dir / runs.CHECKPOINT).unlink()
    elif breakage == "family":
        spec = json.loads((run_dir / runs.SPEC).read_text())
        spec["model"]["family"] = "transformer"
        (run_dir / runs.SPEC).write_text(json.dumps(spec))
    elif breakage == "imagefolder":
        spec = json.loads((run_dir / runs.SPEC).read_text())
        spec["run"]["data"]["name"] = "imagefolder"
        (run_dir / runs.SPEC).write_text(json.dumps(spec))
    else:
        runs.write_status(run_dir, breakage, 30, STEPS)
    before = snapshot(tmp_path)
    result = CliRunner().invoke(cli, ["lesion", str(run_dir)])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert snapshot(tmp_path) == before


def test_cli_refuses_paths_that_hold_no_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "missing", tmp_path / "empty"):
        result = CliRunner().invoke(cli, ["lesion", str(path)])
        assert result.exit_code != 0 and str(path) in result.output and "Traceback" not in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["empty"] and not any((tmp_path / "empty").iterdir())


def test_cli_refuses_an_out_folder_holding_something_else(experiment, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(cli, ["lesion", str(experiment / "resnet14-s0"), "--out", str(out)])
    assert result.exit_code != 0 and "not empty" in result.output
    assert snapshot(out) == {out / "notes.txt": b"keep me"}


def test_unfinished_runs_inside_a_folder_are_skipped_with_a_warning(experiment, tmp_path):
    good = copy_run(experiment, tmp_path)
    bad = copy_run(experiment, tmp_path, "plain14-s0")
    runs.write_status(bad, runs.INTERRUPTED, 30, STEPS)
    found, warnings = collect_runs([good.parent])
    assert [r.path for r in found] == [good]
    assert len(warnings) == 1 and "plain14-s0" in warnings[0] and "interrupted" in warnings[0]
    with pytest.raises(RunDirError, match="not done"):
        collect_runs([bad])


def test_plain_nets_break_where_residual_nets_of_equal_depth_barely_notice(result, block_result):
    """Veit et al.'s finding, on 60-step digits nets (plain-14: 47.5% intact): every block
    deletion sends plain-14 to about chance (90%) and every single-layer deletion past 70%,
    while deleting ResNet-14's last block changes its error by under 2 points."""
    p, pb, r = rows(result, "plain14-s0"), rows(block_result, "plain14-s0"), rows(result, "resnet14-s0")
    assert p.loc[p["deleted"], "test_err"].min() > 0.70
    assert pb.loc[pb["deleted"], "test_err"].min() > 0.75
    same = r[~r["changes_shape"]]
    assert (same["test_err"] - same["intact_err"]).min() < 0.02
    assert r["test_err"].median() < p["test_err"].median() - 0.2


def test_errors_are_finite_fractions(result):
    t = result["lesion"]
    done = t[t["deleted"]]
    assert all(0 <= e <= 1 and not math.isnan(e) for e in done["test_err"])


# Known answers on untrained zoo models (eval mode, random BN statistics so that no BN is
# close to the identity): which layers can go, and what a block computes without one.


def zoo(name):
    model = models.build(name, in_channels=1 if name.startswith("seed") else 3).eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight.data, m.bias.data, m.running_mean):
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def inputs(model):
    return torch.randn(2, 1 if model.arch == "seed" else 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name, layers, kept_shape", [
    ("plain8", 6, 4),  # 3 blocks x 2 convs; the strided convs of stages 2 and 3 change the shape
    ("plain18", 16, 13),  # ImageNet basic: stages 2-4 start with a strided conv
    ("plain50", 48, 14),  # bottleneck: 1x1 convs change channels except layer1.0.conv1 (64->64),
                          # and 13 of 16 blocks have a stride-1 3x3 conv
    ("preplain110", 108, 106),  # pre-activation basic: as plain8, 18 blocks per stage
    ("preplain164", 162, 53),  # pre-activation bottleneck: layer1.0.conv1 (16->16) + 52 stride-1 3x3 convs
    ("seedplain2", 4, 0),  # seed convs widen to 30 channels and back
])  # fmt: skip
def test_layers_that_keep_the_shape_are_counted_from_the_architecture(name, layers, kept_shape):
    model = zoo(name)
    plan = deletions(model)
    assert len(plan) == layers == model.depth - 2 and {d.unit for d in plan} == {"layer"}
    assert [d.index for d in plan] == list(range(2, model.depth))
    shapes = unit_shapes(model, inputs(model), plan)
    assert sum(a == b for a, b in shapes) == kept_shape
    assert len(deletions(model, "block")) == model.blocks


relu = F.relu


KNOWN = {  # (model, block, deleted layer): the block's output without that layer, from its definition
    ("plain8", "layer1.0", "conv1"): lambda b, x: relu(b.bn2(b.conv2(x))),
    ("plain8", "layer2.0", "conv2"): lambda b, x: relu(b.bn1(b.conv1(x))),  # a downsampling block's 2nd layer
    ("plain18", "layer1.1", "conv2"): lambda b, x: relu(b.bn1(b.conv1(x))),
    ("plain50", "layer1.0", "conv1"): lambda b, x: relu(b.bn3(b.conv3(relu(b.bn2(b.conv2(x)))))),
    ("plain50", "layer1.1", "conv2"): lambda b, x: relu(b.bn3(b.conv3(relu(b.bn1(b.conv1(x)))))),
    ("preplain110", "layer1.0", "conv1"): lambda b, x: b.conv2(relu(b.bn2(x))),  # no ReLU on x itself
    ("preplain110", "layer3.1", "conv2"): lambda b, x: b.conv1(relu(b.bn1(x))),
    ("preplain164", "layer1.1", "conv2"): lambda b, x: b.conv3(relu(b.bn3(b.conv1(relu(b.bn1(x)))))),
}


@pytest.mark.parametrize("key", list(KNOWN), ids=lambda k: "-".join(k))
def test_a_deleted_layer_passes_its_input_through(key):
    name, block_name, conv = key
    model = zoo(name)
    d = next(d for d in deletions(model) if d.layer == f"{block_name}.{conv}")
    block = dict(model.named_modules())[block_name]
    seen = []
    handle = block.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        intact_out = model(inputs(model))
    handle.remove()
    x = seen[0]  # the block's input inside the net (a ReLU output for post-activation blocks)
    with torch.no_grad():
        expected = KNOWN[key](block, x)
        with deleted(model, d):
            out = block(x)
        assert torch.equal(out, expected)
        assert not torch.allclose(block(x), expected)  # the layer did matter, and the hooks are gone
        assert torch.equal(model(inputs(model)), intact_out)


def test_a_deleted_plain_block_hands_on_its_input():
    model = zoo("preplain110")
    d = deletions(model, "block")[3]
    block = dict(model.named_modules())[d.block]
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        with deleted(model, d):
            assert block(x) is x
        assert block(x).shape == x.shape and not torch.allclose(block(x), x)


def test_deleting_a_layer_equals_building_the_net_without_it():
    """plain8 rebuilt with a block's conv2 and bn2 swapped for nn.Identity (the block becomes
    relu(relu(bn1(conv1(x))))) gives the logits of plain8 with that layer deleted, exactly."""
    model = zoo("plain8")
    x = inputs(model)
    for d in (d for d in deletions(model) if d.layer in ("layer1.0.conv2", "layer3.0.conv2")):
        without = copy.deepcopy(model)
        block = dict(without.named_modules())[d.block]
        block.conv2, block.bn2 = nn.Identity(), nn.Identity()
        with torch.no_grad(), deleted(model, d):
            assert torch.equal(model(x), without(x))
        with torch.no_grad():
            assert not torch.allclose(model(x), without(x))


def test_a_plain_net_without_any_deletable_layer_is_named_in_a_warning(tmp_path):
    assert train(tiny("seedplain1"), tmp_path, progress=False).state == runs.DONE
    run_dir = tmp_path / "quick-digits" / "seedplain1-s0"
    result = CliRunner().invoke(cli, ["lesion", str(run_dir), "--out", str(tmp_path / "out"), "--formats", "png"])
    assert result.exit_code == 0, result.output
    assert "seedplain1-s0: no layer keeps its input's shape" in result.output and "--plain-unit block" in result.output
    assert "no layer keeps its shape, so none was deleted" in result.output
    t = read_analysis(tmp_path / "out").tables["lesion"]
    assert list(t["layer"]) == ["layers.0.conv1", "layers.0.conv2"] and t["test_err"].isna().all()


def test_a_run_of_another_family_inside_a_folder_is_skipped_not_fatal(experiment, tmp_path):
    good = copy_run(experiment, tmp_path)
    odd = copy_run(experiment, tmp_path, "plain14-s0")
    spec = json.loads((odd / runs.SPEC).read_text())
    spec["model"]["family"] = "transformer"
    (odd / runs.SPEC).write_text(json.dumps(spec))
    found, warnings = collect_runs([good.parent])
    assert [r.path for r in found] == [good]
    assert len(warnings) == 1 and "plain or residual" in warnings[0]


def test_a_damaged_checkpoint_inside_a_folder_is_skipped_and_every_reason_named(experiment, tmp_path):
    good = copy_run(experiment, tmp_path)
    cut = copy_run(experiment, tmp_path, "plain14-s0")
    truncate_file(cut / runs.CHECKPOINT)
    result = CliRunner().invoke(cli, ["lesion", str(good.parent), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0 and "lesioned 1 run(s)" in result.output, result.output
    assert f"warning: skipped {cut}: {cut / runs.CHECKPOINT} is damaged (not the archive torch.save writes" in (
        result.output)
    runs.write_status(good, runs.INTERRUPTED, 30, STEPS)  # now nothing is left: both reasons are named
    result = CliRunner().invoke(cli, ["lesion", str(good.parent), "--out", str(tmp_path / "out2")])
    assert result.exit_code == 1 and "(2 left out: " in result.output
    assert "plain14-s0/checkpoint.pt is damaged" in result.output and "resnet14-s0 is interrupted" in result.output


class Foreign:
    """An object a weights-only load refuses to build."""


def test_a_foreign_pickle_is_refused_without_advice_to_load_it_unsafely(experiment, tmp_path):
    run_dir = copy_run(experiment, tmp_path)
    torch.save({"model": Foreign()}, run_dir / runs.CHECKPOINT)  # a zip, but not plain values
    result = CliRunner().invoke(cli, ["lesion", str(run_dir), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "it holds objects other than tensors and plain values, so it is not a checkpoint gradlab wrote" in (
        result.output)
    assert "weights_only" not in result.output
