"""Bad input: one clear line, non-zero exit, no traceback, nothing on disk changed."""

import json

import pytest
from click.testing import CliRunner

from gradlab import runs
from gradlab.bench.synthetic_runs import make_run
from tests.damage import truncate_file
from gradlab.cli.main import cli


def snapshot(root):
    """Every file's bytes and every folder (a rejected run must not leave an empty one)."""
    return {p: p.read_bytes() if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


@pytest.fixture()
def existing(tmp_path):
    """A finished run and a file that bad commands must leave alone."""
    make_run(tmp_path / "runs", "resnet", 8, steps=100, experiment="earlier")
    (tmp_path / "notes.txt").write_text("keep me")
    return tmp_path


def bad_config(tmp_path, text):
    path = tmp_path / f"bad{abs(hash(text))}.toml"
    path.write_text(text)
    return str(path)


CASES = {
    "unknown model": (["train", "resnet21", "--preset", "quick"], "CIFAR ResNets have 6n+2 layers"),
    "unknown model name": (["train", "vgg16", "--preset", "quick"], "gradlab models"),
    "junk depths": (["compare", "--depths", "20,x", "--preset", "quick"], "'x' is not a whole number"),
    "bad depth": (["compare", "--depths", "20,21", "--preset", "quick"], "6n+2"),
    "zero steps": (["train", "resnet8", "--preset", "quick", "--steps", "0"], "positive"),
    "negative steps": (["train", "resnet8", "--preset", "quick", "--steps", "-5"], "positive"),
    "batch larger than data": (["train", "resnet8", "--preset", "quick", "--batch-size", "5000"],
                               "larger than the 1437 training images"),
    "unknown dataset": (["train", "resnet8", "--dataset", "imagenet"], "imagenet"),
    "unknown preset": (["train", "resnet8", "--preset", "fast"], "unknown preset 'fast'"),
    "unknown config key": (["train", "resnet8", "--config", "{cfg_unknown}"], "unknown key 'stepz'"),
    "wrong config type": (["train", "resnet8", "--config", "{cfg_type}"], "'lr' should be number"),
    "no GPU": (["train", "resnet8", "--preset", "quick", "--device", "cuda:7"], "CUDA"),
    "report out is a file": (["report", "{runs}", "--out", "{notes}"], "is an existing file"),
    "report of nothing": (["report", "{missing}"], "does not exist"),
    "empty item in depths": (["compare", "--depths", "20,,56", "--preset", "quick"], "empty item"),
    "empty seeds": (["compare", "--seeds", "", "--preset", "quick"], "--seeds is empty"),
    "seeds not numbers": (["compare", "--seeds", "x", "--preset", "quick"], "such as 0,1,2"),
    "negative seed": (["train", "resnet8", "--preset", "quick", "--seed", "-1"], "seed must be a whole number"),
    "negative seeds": (["compare", "--seeds", "0,-1", "--preset", "quick"], "seed must be a whole number"),
    "huge seed": (["train", "resnet8", "--preset", "quick", "--seed", str(10**24)], "seed must be a whole number"),
    "negative gamma": (["train", "resnet8", "--config", "{cfg_gamma}"], "gamma"),
    "milestone beyond steps": (["train", "resnet8", "--config", "{cfg_milestone}"], "beyond the 300 steps"),
    "infinite lr": (["train", "resnet8", "--preset", "quick", "--lr", "inf"], "learning rate must be a finite"),
    "binary config": (["train", "resnet8", "--config", "{cfg_binary}"], "not a UTF-8 text file"),
    "runs dir is a file": (["train", "resnet8", "--preset", "quick", "--runs-dir", "{notes}"], "is a file"),
    "compare runs dir is a file": (["compare", "--preset", "quick", "--runs-dir", "{notes}"], "is a file"),
    "compare out is a file": (["compare", "--depths", "8", "--preset", "quick", "--out", "{notes}"], "is a file"),
    "experiment escapes": (["train", "resnet8", "--preset", "quick", "--experiment", "../x"], "--experiment"),
    "experiment absolute": (["train", "resnet8", "--preset", "quick", "--experiment", "{missing}"], "--experiment"),
    "compare experiment escapes": (["compare", "--preset", "quick", "--experiment", "a/b"], "--experiment"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_error_and_changes_nothing(existing, case, monkeypatch):
    args, message = CASES[case]
    monkeypatch.chdir(existing)
    values = {"cfg_unknown": bad_config(existing, "[recipe]\nstepz = 3\n"),
              "cfg_type": bad_config(existing, '[recipe]\nlr = "fast"\n'),
              "runs": str(existing / "runs"), "notes": str(existing / "notes.txt"),
              "missing": str(existing / "nowhere"),
              "cfg_gamma": bad_config(existing, 'preset = "g"\n[data]\nname = "digits"\n[recipe]\ngamma = -0.1\n'),
              "cfg_milestone": bad_config(existing, '[data]\nname = "digits"\n[recipe]\nsteps = 300\n'
                                                    'milestones = [150, 600]\n'),
              "cfg_binary": str(existing / "binary.toml")}
    (existing / "binary.toml").write_bytes(bytes(range(256)))
    args = [a.format(**values) for a in args]
    if case == "no GPU":
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    before = snapshot(existing)
    own = args[0] == "report" or "--runs-dir" in args
    out = CliRunner().invoke(cli, args if own else args + ["--runs-dir", str(existing / "runs")])
    assert out.exit_code != 0, out.output
    assert message in out.output, out.output
    assert "Traceback" not in out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)  # handled, not raised
    assert snapshot(existing) == before


def test_report_names_a_damaged_run_and_builds_from_the_others(existing):
    damaged = make_run(existing / "runs", "plain", 8, steps=100, experiment="quick-digits")
    truncate_file(damaged / runs.METRICS)
    newer = make_run(existing / "runs", "plain", 14, steps=100, experiment="quick-digits")
    spec = json.loads((newer / runs.SPEC).read_text())
    (newer / runs.SPEC).write_text(json.dumps({**spec, "format_version": 99}))
    out = CliRunner().invoke(cli, ["report", str(existing / "runs"), "--out", str(existing / "rep"),
                                   "--formats", "png"])
    assert out.exit_code == 0, out.output
    assert "plain8-s0" in out.output and "damaged" in out.output
    assert "newer gradlab" in out.output
    assert (existing / "rep" / "report.md").exists()
