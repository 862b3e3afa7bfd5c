"""Places gradlab may not write: a read-only mount (or a folder without write permission)
as an analysis's output, an immutable checkpoint.pt, an immutable status.json of a watched
run. One line naming the file and the fix, before the work where it can be checked first;
the run marked failed where it cannot. Real mounts and file attributes where allowed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest
import torch
from click.testing import CliRunner

import gradlab
from gradlab import runs
from gradlab.callbacks import Callback
from gradlab.cli.main import cli
from gradlab.config import load_preset, make_run_spec
from gradlab.errors import RunDirError
from gradlab.file_io import read_json
from gradlab.train import train


@pytest.fixture()
def read_only(tmp_path):
    """A read-only bind mount where root may make one, else a folder without write permission."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
        ["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True, check=False).returncode == 0
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root cannot be kept out of a folder by permissions, and no read-only mount is allowed here")
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    yield folder, "lies on a read-only file system" if mounted else "is not writable by you"
    if mounted:
        subprocess.run(["umount", str(folder)], check=False)
    folder.chmod(0o755)


def _chattr(path, flag: str) -> None:
    done = shutil.which("chattr") and subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False)
    if not done or done.returncode != 0:
        pytest.skip("chattr (immutable files) is not allowed here")


class StopAt(Callback):
    def on_eval(self, run_dir, row):
        if row["step"] == 15:
            raise KeyboardInterrupt


def _trained(tmp_path, steps=6):
    result = CliRunner().invoke(cli, ["train", "resnet8", "--preset", "quick", "--steps", str(steps), "--runs-dir",
                                      str(tmp_path / "runs"), "--wandb", "disabled"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return tmp_path / "runs"


@pytest.mark.parametrize("command", [["lesion", "RUNS"], ["analyze", "gradients", "--families", "plain", "--depths",
                                                          "8", "--seeds", "0", "--batch-size", "8"]])  # fmt: skip
def test_an_analysis_into_an_unwritable_folder_is_refused_before_the_work(tmp_path, read_only, command):
    folder, why = read_only
    args = [str(_trained(tmp_path)) if a == "RUNS" else a for a in command]
    result = CliRunner().invoke(cli, [*args, "--out", str(folder / "out")])
    assert result.exit_code == 1
    assert f"Error: cannot write --out {folder / 'out'}: {folder} {why}; pass another folder" in result.output
    assert "lesioned" not in result.output and "Traceback" not in result.output


def test_an_analysis_into_a_writable_folder_is_written(tmp_path):
    result = CliRunner().invoke(cli, ["lesion", str(_trained(tmp_path)), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0 and "lesioned 1 run(s)" in result.output and "cannot write" not in result.output


@pytest.mark.slow
def test_an_immutable_checkpoint_fails_the_run_with_one_line(tmp_path):
    spec = make_run_spec("resnet8", load_preset("quick"), steps=40)
    with pytest.raises(KeyboardInterrupt):
        train(spec, tmp_path, progress=False, callbacks=[StopAt()])
    run_dir = runs.run_dir_for(spec, tmp_path)
    _chattr(run_dir / runs.CHECKPOINT, "+i")
    try:
        result = CliRunner().invoke(cli, ["train", "resnet8", "--preset", "quick", "--steps", "40", "--runs-dir",
                                          str(tmp_path), "--wandb", "disabled"])  # fmt: skip
    finally:
        _chattr(run_dir / runs.CHECKPOINT, "-i")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: cannot write {run_dir / runs.CHECKPOINT}: Operation not permitted; check its permissions" in (
        result.output)
    status = read_json(run_dir / runs.STATUS)
    assert status["state"] == runs.FAILED and "chattr -i" in status["message"]
    assert not list(run_dir.glob(".*.tmp"))
    assert torch.load(run_dir / runs.CHECKPOINT, weights_only=True)["step"] == 13  # the last one, intact


def test_an_immutable_status_file_of_a_watched_run_is_a_gradlab_error(tmp_path):
    model = torch.nn.Linear(4, 2)
    with gradlab.watch(model, run_dir=tmp_path / "r", every=1) as rec:
        model(torch.randn(2, 4)).sum().backward()
        rec.step(0)
    _chattr(tmp_path / "r" / runs.STATUS, "+i")
    try:
        with pytest.raises(RunDirError, match=r"cannot write .*status.json: Operation not permitted"):
            gradlab.watch(model, run_dir=tmp_path / "r", resume=True)
    finally:
        _chattr(tmp_path / "r" / runs.STATUS, "-i")
