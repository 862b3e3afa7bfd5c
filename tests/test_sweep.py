"""Sweeps in compare (#30): parsing, run names, whole-recipe reuse, the plan and ETA lines,
and the refusals that come before anything trains."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gradlab import runs
from gradlab.callbacks import Callback
from gradlab.cli.main import cli
from gradlab.compare import compare, plan
from gradlab.config import load_preset
from gradlab.errors import ConfigError, RunDirError
from gradlab.launch.local import InProcess
from gradlab.sweep import describe, from_options, grid, parse_set, varied

TINY = {"steps": 2, "recipe": {"batch_size": 16, "eval_every": 1, "checkpoint_every": 2, "record": False}}


# --- parsing ---------------------------------------------------------------------------------


def test_flags_and_set_make_one_sweep_typed_as_the_recipe():
    sweep = from_options({"lr": "0.01,0.03,0.1", "batch_size": "64", "steps": None},
                         ["weight_decay=1e-4,5e-4", "milestones=150/225,100/200", "nesterov=true,false"])
    assert sweep == {"lr": (0.01, 0.03, 0.1), "batch_size": (64,), "weight_decay": (1e-4, 5e-4),
                     "milestones": ((150, 225), (100, 200)), "nesterov": (True, False)}
    assert varied(sweep) == ("lr", "weight_decay", "milestones", "nesterov")
    assert len(grid(sweep)) == 3 * 2 * 2 * 2 and grid({}) == [{}]
    assert describe({"lr": (0.01, 0.1), "batch_size": (64,)}) == "lr 0.01, 0.1"


@pytest.mark.parametrize("items, message", [
    (["depth=20,56"], "--set depth: 'depth' is not a recipe key, and only recipe values can be swept; sweep one of: steps"),
    (["norm=bn,none"], "'norm' is not a recipe key"),
    (["eval_every=10,20"], "eval_every changes what is written, not what is trained, so it cannot be swept"),
    (["lr"], "--set lr: give KEY=VALUES, such as --set weight_decay=1e-4,5e-4"),
    (["lr=0.1", "lr=0.2"], "--set lr is given twice"),
    (["lr=0.1,x"], "--set lr: 'x' is not a number; give values separated by commas, such as --set lr=0.01,0.1"),
    (["batch_size=64,big"], "--set batch_size: 'big' is not a whole number; give values separated by commas, such as "
                            "--set batch_size=64,128"),
    (["lr=0.1,,0.2"], "--set lr has an empty value in '0.1,,0.2'"),
    (["lr=0.1,0.1"], "--set lr lists a value twice: 0.1,0.1"),
])
def test_bad_sweeps_are_refused_with_the_fix(items, message):
    with pytest.raises(ConfigError) as e:
        parse_set(items)
    assert message in str(e.value)


def test_a_key_given_by_a_flag_and_by_set_is_refused():
    with pytest.raises(ConfigError, match="lr is given by --lr and by --set; give it once"):
        from_options({"lr": "0.1"}, ["lr=0.2"])


# --- naming ----------------------------------------------------------------------------------


def test_runs_are_named_by_the_values_a_sweep_varies():
    sweep = from_options({"lr": "0.01,0.1", "batch_size": "32"})
    specs = plan(load_preset("quick"), (20,), ("fixup",), (0, 1), sweep=sweep)
    assert [s.name for s in specs] == ["fixup20-lr0.01-s0", "fixup20-lr0.01-s1", "fixup20-lr0.1-s0", "fixup20-lr0.1-s1"]
    assert {s.recipe.batch_size for s in specs} == {32}  # one value: a setting, not in the name
    spec = specs[2].to_dict()  # what spec.json's "run" and the trackers' config hold
    assert spec["named_by"] == ["lr"] and spec["recipe"]["lr"] == 0.1
    assert [s.name for s in plan(load_preset("quick"), (20,), ("fixup",), (0,))] == ["fixup20-s0"]  # no sweep
    steps = plan(load_preset("quick"), (20,), ("plain",), (0,), sweep=from_options({"steps": "100,200"}))
    assert [(s.name, s.recipe.milestones) for s in steps] == [("plain20-steps100-s0", (50, 75)),
                                                              ("plain20-steps200-s0", (100, 150))]


def test_a_swept_value_the_recipe_refuses_is_refused_before_anything_trains():
    with pytest.raises(ConfigError, match="learning rate must be positive, got -0.1"):
        plan(load_preset("quick"), (20,), ("plain",), (0,), sweep=from_options({"lr": "0.1,-0.1"}))


# --- reuse -----------------------------------------------------------------------------------


class Config(Callback):
    """What a tracker is given as a run's config (W&B's config, TensorBoard's spec text)."""

    seen: list = []

    def on_start(self, run_dir, spec, resumed):
        self.seen.append((spec["name"], spec["recipe"]["lr"], spec["run"]["named_by"]))


class Counting(InProcess):
    """The in-process launcher, keeping the names of the runs it trained."""

    def __init__(self):
        super().__init__(progress=False, callbacks=[Config()])
        self.trained = []

    def run(self, specs, runs_dir, on_start, on_done):
        self.trained += [s.name for s in specs]
        super().run(specs, runs_dir, on_start, on_done)


def _compare(tmp_path, lrs, **recipe):
    sweep = from_options({"lr": lrs})
    overrides = {**TINY, "recipe": {**TINY["recipe"], **recipe}}
    specs = plan(load_preset("quick"), (8,), ("plain",), (0,), sweep=sweep, **overrides)
    launcher, messages = Counting(), []
    compare(specs, tmp_path / "runs", out=tmp_path / "report", formats=("png",), notify=messages.append,
            launcher=launcher)
    return launcher.trained, messages


def test_rerun_trains_nothing_and_a_changed_value_trains_only_its_runs(tmp_path):
    Config.seen.clear()
    trained, messages = _compare(tmp_path, "0.01,0.1")
    assert trained == ["plain8-lr0.01-s0", "plain8-lr0.1-s0"]
    assert Config.seen == [("plain8-lr0.01-s0", 0.01, ["lr"]), ("plain8-lr0.1-s0", 0.1, ["lr"])]
    assert any(m.startswith("2 run(s) to train, about ") for m in messages)
    assert not any("already finished" in m for m in messages)
    trained, messages = _compare(tmp_path, "0.01,0.1")
    assert trained == [] and "2 of 2 runs already finished" in " ".join(messages)
    assert not any("to train, about" in m for m in messages)
    trained, messages = _compare(tmp_path, "0.01,0.3")
    assert trained == ["plain8-lr0.3-s0"]
    assert any("1 of 2 runs already finished" in m for m in messages)
    assert any(m.startswith("1 run(s) to train, about ") and "finished run(s) here" in m for m in messages)
    spec = json.loads((tmp_path / "runs" / "quick-digits" / "plain8-lr0.3-s0" / runs.SPEC).read_text())
    assert spec["recipe"]["lr"] == 0.3 and spec["run"]["named_by"] == ["lr"]


def test_a_finished_run_of_another_recipe_under_the_same_name_is_refused_before_training(tmp_path):
    _compare(tmp_path, "0.01,0.1")
    with pytest.raises(RunDirError, match=r"already holds a run with different settings \(recipe.weight_decay\)"):
        _compare(tmp_path, "0.01,0.1,0.3", weight_decay=5e-4)
    assert not (tmp_path / "runs" / "quick-digits" / "plain8-lr0.3-s0").exists()  # nothing trained


def test_the_eta_of_runs_that_train_elsewhere_is_not_guessed_from_this_machine():
    from gradlab.compare import cost
    from gradlab.eta import estimate

    specs = plan(load_preset("quick"), (20,), ("plain",), (0,))
    assert estimate(specs, [], cost, probe=False) == (
        None, "no estimate: they train on the launcher's machines and none has finished here yet")
    seconds, basis = estimate(specs, [], cost)
    assert seconds > 0 and basis == "from 3 timed steps of plain20, without recording or evaluation: a lower bound"


# --- the command line ------------------------------------------------------------------------


def _cli(tmp_path, *args):
    return CliRunner().invoke(cli, ["compare", "--preset", "quick", "--depths", "20", "--runs-dir",
                                    str(tmp_path / "runs"), *args])


@pytest.mark.parametrize("args, message", [
    (["--set", "depth=20,56"], "'depth' is not a recipe key"),
    (["--lr", "0.01,0.1", "--select", "lr", "--select-on", "test"], "--select-on test is refused"),
    (["--lr", "0.01,0.1", "--select", "lr"], "no images are held out: add --val-split N"),
    (["--lr", "0.1", "--val-split", "300", "--select", "lr"], "--select lr: lr takes one value here (nothing is swept)"),
    (["--lr", "0.01,0.1", "--set", "lr=0.3"], "lr is given by --lr and by --set"),
    (["--lr", "0.01,abc"], "--lr: 'abc' is not a number; give values separated by commas, such as --lr 0.01,0.1"),
    (["--steps", "100,1.5"], "--steps: '1.5' is not a whole number"),
])
def test_cli_refusals_are_one_line_before_anything_trains(tmp_path, args, message):
    res = _cli(tmp_path, *args)
    assert res.exit_code != 0 and message in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "runs").exists()


def test_cli_prints_the_plan_with_the_sweep_and_the_selection(tmp_path, monkeypatch):
    import gradlab.compare

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(gradlab.compare, "compare", stop)
    res = _cli(tmp_path, "--families", "plain,fixup", "--lr", "0.01,0.1", "--seeds", "0,1", "--val-split", "300",
               "--select", "lr")
    assert isinstance(res.exception, Stop)
    assert ("compare: 8 runs (plain, fixup x depths 20 x lr 0.01, 0.1 x seeds 0, 1) on digits, 300 training images "
            "held out for validation, 300 steps each") in res.output
    assert "select: lr per family x depth on validation error (mean over seeds)" in res.output
    res = _cli(tmp_path, "--families", "plain")
    assert "compare: 1 runs (plain x depths 20 x seeds 0) on digits, 300 steps each" in res.output
    assert "select:" not in res.output and "held out" not in res.output
