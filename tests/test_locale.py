"""A non-UTF-8 locale (LC_ALL=C, PYTHONUTF8=0): the shipped presets read, and a healthy run
under a non-ASCII path trains, lists as done and reports, from the CLI and from the
library. Real subprocesses in that locale."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

C_LOCALE = {**{k: v for k, v in os.environ.items() if not k.startswith("LC_") and k != "LANG"},
            "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "", "OMP_NUM_THREADS": "1"}  # fmt: skip


def gradlab(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "gradlab", *map(str, args)], capture_output=True, env=C_LOCALE,
                          timeout=timeout, check=False)  # fmt: skip


def test_the_c_locale_is_really_ascii_here():
    out = subprocess.run([sys.executable, "-c", "import sys; print(sys.getfilesystemencoding(), sys.flags.utf8_mode)"],
                         capture_output=True, text=True, env=C_LOCALE, check=True).stdout.split()  # fmt: skip
    if out[0].replace("-", "").lower() == "utf8":
        pytest.skip("this Python coerces the C locale to UTF-8 anyway; nothing to test")
    assert out == ["ascii", "0"]


def test_presets_read_in_the_c_locale():
    proc = gradlab("presets")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert b"quick: digits" in proc.stdout and b"Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_run_under_a_non_ascii_path_trains_lists_and_reports_in_the_c_locale(tmp_path):
    runs_dir = tmp_path / "läufe-ü"
    trained = gradlab("train", "resnet8", "--preset", "quick", "--steps", "4", "--runs-dir", runs_dir, "--wandb",
                      "disabled")  # fmt: skip
    assert trained.returncode == 0, trained.stderr.decode(errors="replace")[-2000:]
    listed = gradlab("runs", runs_dir)
    assert listed.returncode == 0 and b"done" in listed.stdout and b"unreadable" not in listed.stdout
    report = gradlab("report", runs_dir, "--out", tmp_path / "bericht-ü", "--formats", "png")
    assert report.returncode == 0, report.stderr.decode(errors="replace")[-2000:]
    assert (tmp_path / "bericht-ü" / "report.md").read_text(encoding="utf-8").startswith("#")
    # the library, in the same locale without UTF-8 mode: the tables still read
    read = subprocess.run([sys.executable, "-c", "import sys; from gradlab import runs; "
                           "(r,) = runs.load(sys.argv[1]); print(r.state, int(r.layers['step'].max()))", runs_dir],
                          capture_output=True, text=True, env=C_LOCALE, check=False)  # fmt: skip
    assert read.returncode == 0 and read.stdout.split() == ["done", "3"], read.stderr[-2000:]
