"""A config file that sets steps but no milestones: the paper's milestones scaled to its
steps, as --steps scales them; one that sets both keeps its own, and a milestone beyond
the steps is refused naming the file. Through the loader and the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gradlab.config import load_preset, make_run_spec
from gradlab.errors import ConfigError


def config(tmp_path, recipe: str):
    path = tmp_path / "cfg.toml"
    path.write_text(f'[data]\nname = "digits"\n[recipe]\nbatch_size = 16\n{recipe}\n')
    return path


def test_steps_alone_scale_the_papers_milestones(tmp_path):
    preset = load_preset(path=config(tmp_path, "steps = 40"))
    assert preset.recipe.steps == 40 and preset.recipe.milestones == (20, 30)  # 32000/64000, 48000/64000
    assert make_run_spec("resnet8", preset).recipe.milestones == (20, 30)  # and validated
    assert make_run_spec("resnet8", preset, steps=80).recipe.milestones == (40, 60)  # --steps scales on


def test_milestones_given_with_steps_are_kept(tmp_path):
    assert load_preset(path=config(tmp_path, "steps = 40\nmilestones = [10]")).recipe.milestones == (10,)
    assert load_preset(path=config(tmp_path, "steps = 40\nmilestones = []")).recipe.milestones == ()
    assert load_preset(path=config(tmp_path, "milestones = [100]")).recipe.milestones == (100,)  # paper's steps


def test_a_milestone_beyond_the_steps_is_refused_naming_the_file(tmp_path):
    cfg = config(tmp_path, "steps = 40\nmilestones = [10, 60]")
    with pytest.raises(ConfigError, match=r"cfg.toml \[recipe\]: milestone 60 is beyond the 40 steps of the run; "
                                          r"give milestones up to 40"):
        load_preset(path=cfg)


def test_the_shipped_presets_keep_their_milestones():
    assert load_preset("quick").recipe.milestones == (150, 225)
    assert load_preset("paper").recipe.milestones == (32000, 48000)


def gradlab_train(cfg, runs_dir):
    return subprocess.run([sys.executable, "-m", "gradlab", "train", "resnet8", "--config", str(cfg), "--runs-dir",
                           str(runs_dir), "--no-progress", "--wandb", "disabled", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_the_train_command_takes_a_config_that_sets_only_steps(tmp_path):
    proc = gradlab_train(config(tmp_path, "steps = 4"), tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (spec,) = (tmp_path / "runs").glob("*/*/spec.json")
    assert json.loads(spec.read_text())["recipe"]["milestones"] == [2, 3]


def test_the_train_command_refuses_a_milestone_beyond_the_steps_in_one_line(tmp_path):
    proc = gradlab_train(config(tmp_path, "steps = 4\nmilestones = [2, 8]"), tmp_path / "runs")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "cfg.toml [recipe]: milestone 8 is beyond the 4 steps of the run" in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("spec.json"))
