"""Lesion study (gradlab.probes.lesion): known answers on tiny trained runs, the CLI, bad input."""

import json
import math
import shutil

import pytest
import torch
from click.testing import CliRunner

from gradlab import runs
from gradlab.analysis_dirs import read_analysis
from gradlab.cli.main import cli
from gradlab.config import load_preset, make_run_spec
from gradlab.errors import RunDirError
from gradlab.probes.lesion import collect_runs, lesion
from gradlab.train import train

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


def rows(result, run):
    t = result["lesion"]
    return t[t["run"] == run].sort_values("block_index").reset_index(drop=True)


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_intact_error_is_the_runs_own_final_test_error(result, experiment):
    for _, row in result["runs"].iterrows():
        run = runs.read_run(experiment / row["run"])
        assert row["intact_err"] == pytest.approx(run.final("test_err"), abs=1e-12)
        assert row["step"] == STEPS


def test_every_residual_block_is_deleted_and_downsampling_ones_are_marked(result):
    r = rows(result, "resnet14-s0")
    assert list(r["block"]) == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1"]
    assert list(r["changes_shape"]) == [False, False, True, False, True, False]
    assert r["deleted"].all() and r["test_err"].between(0, 1).all()


def test_plain_blocks_are_deleted_only_where_the_shape_allows_and_each_deletion_changes_the_error(result):
    p = rows(result, "plain14-s0")
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
    assert "Lesion ResNet-14" in result.output and "Lesion plain-14" in result.output
    assert [r.name for r in runs.load(experiment)] == ["plain14-s0", "resnet14-s0"]  # runs untouched, no new run


def copy_run(experiment, tmp_path, name="resnet14-s0"):
    dest = tmp_path / "exp" / name
    shutil.copytree(experiment / name, dest, ignore=shutil.ignore_patterns("lesion"))
    return dest


@pytest.mark.parametrize("breakage, message", [
    ("no_checkpoint", "has no checkpoint.pt"),
    ("interrupted", "is interrupted"),
    ("diverged", "diverged"),
    ("family", "plain or residual"),
])  # fmt: skip
def test_cli_refuses_an_unusable_run_without_traceback_or_writes(experiment, tmp_path, breakage, message):
    run_dir = copy_run(experiment, tmp_path)
    if breakage == "no_checkpoint":
        (run_dir / runs.CHECKPOINT).unlink()
    elif breakage == "family":
        spec = json.loads((run_dir / runs.SPEC).read_text())
        spec["model"]["family"] = "transformer"
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


def test_plain_nets_break_where_residual_nets_of_equal_depth_barely_notice(result):
    """Veit et al.'s finding, on 60-step digits nets: every deletion sends plain-14 to about
    chance (90%), while deleting ResNet-14's last block changes its error by under 2 points."""
    p, r = rows(result, "plain14-s0"), rows(result, "resnet14-s0")
    assert p.loc[p["deleted"], "test_err"].min() > 0.75
    same = r[~r["changes_shape"]]
    assert (same["test_err"] - same["intact_err"]).min() < 0.02
    assert r["test_err"].median() < p["test_err"].median() - 0.2


def test_errors_are_finite_fractions(result):
    t = result["lesion"]
    done = t[t["deleted"]]
    assert all(0 <= e <= 1 and not math.isnan(e) for e in done["test_err"])
