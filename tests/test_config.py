import subprocess
import sys
import zipfile

import pytest

from gradlab.config import Recipe, load_preset, make_run_spec, parse_preset, presets
from gradlab.errors import ConfigError


def test_named_presets_exist_and_paper_is_the_paper():
    available = presets()
    assert {"paper", "quick"} <= set(available)
    paper = available["paper"]
    assert paper.data.name == "cifar10"
    assert paper.recipe == Recipe()  # the dataclass defaults are He et al. 2015 §4.2
    assert available["quick"].data.name == "digits"


def test_unknown_key_is_named_with_valid_keys(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text('[recipe]\nstepz = 10\n')
    with pytest.raises(ConfigError, match=r"unknown key 'stepz'.*steps"):
        load_preset(path=f)


def test_wrong_type_is_named(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text('[recipe]\nsteps = "many"\n')
    with pytest.raises(ConfigError, match=r"'steps' should be integer, got 'many'"):
        load_preset(path=f)
    with pytest.raises(ConfigError, match="milestones"):
        parse_preset('[recipe]\nmilestones = [1, "a"]\n', "inline")


def test_bad_toml_and_unknown_preset():
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_preset("[recipe\n", "broken.toml")
    with pytest.raises(ConfigError, match="available: .*paper"):
        load_preset("nope")


def test_flags_override_preset_and_steps_scale_schedule():
    spec = make_run_spec("plain56", load_preset("paper"), steps=640, recipe={"batch_size": 32, "lr": None},
                         data={"name": "digits"})
    assert spec.recipe.batch_size == 32 and spec.recipe.lr == 0.1
    assert spec.recipe.milestones == (320, 480)
    assert spec.data.name == "digits" and spec.experiment == "paper-digits"
    assert spec.name == "plain56-s0"


def test_non_positive_steps_and_batch_are_errors():
    with pytest.raises(ConfigError, match="positive"):
        make_run_spec("resnet20", load_preset("quick"), steps=0)
    with pytest.raises(ConfigError, match="batch size must be positive"):
        make_run_spec("resnet20", load_preset("quick"), recipe={"batch_size": -4})


def test_presets_ship_inside_the_wheel(tmp_path):
    """Named presets must work after a plain (non-editable) pip install."""
    import gradlab

    root = __import__("pathlib").Path(gradlab.__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(root)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("gradlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gradlab/experiments/cifar10_paper.toml" in names
    assert "gradlab/experiments/digits_quick.toml" in names


def test_gradlab_presets_lists_every_preset_with_its_description_and_file():
    from click.testing import CliRunner

    from gradlab.cli.main import cli
    from gradlab.config import presets

    out = CliRunner().invoke(cli, ["presets"])
    assert out.exit_code == 0, out.output
    for name, p in presets().items():
        assert f"{name}: {p.description}" in out.output
        assert f"{p.recipe.steps:,} steps, batch {p.recipe.batch_size}" in out.output and p.source in out.output
    verbose = CliRunner().invoke(cli, ["presets", "-v"]).output
    assert "warmup_min_depth = 110" in verbose and "[compare] depths = (20, 56, 110)" in verbose


def test_every_command_help_has_examples():
    from click.testing import CliRunner

    from gradlab.cli.main import COMMANDS, cli

    for name in COMMANDS:
        if name in ("probe", "bench"):  # groups: their subcommands carry the examples
            continue
        text = CliRunner().invoke(cli, [name, "-h"]).output
        assert "Example" in text, name
