"""A report appears whole or not at all (issue #32, item 4): it is built beside its folder
and swapped in; a killed report leaves the old one whole, and the next report removes (or
undoes) what it left; the user's files in the folder survive the swap."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from gradlab.bench import synthetic_runs as F
from gradlab.errors import ReportError
from gradlab.report import build_report
from gradlab.report.staging import clean_leftovers
from tests import report_procs as P


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return P.make_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def template(runs, tmp_path_factory):
    """A complete old report (of the plain-20 runs) with a user's file, and its snapshot."""
    out = tmp_path_factory.mktemp("template") / "report"
    return out, P.old_report(runs, out)


@pytest.fixture
def old(template, tmp_path):
    """A fresh copy of the old report in this test's folder, and the snapshot it must match."""
    src, snap = template
    out = tmp_path / "report"
    shutil.copytree(src, out)
    return out, snap


def _small_report(runs, out, **kw):
    return build_report([runs / "degradation-test" / "resnet20-s0"], out, formats="png", workers=1, **kw)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_report_leaves_the_old_one_whole_and_the_next_removes_its_leftovers(runs, old):
    out, before = old
    proc = P.start_report(runs, out)
    P.wait_drawing(proc)
    proc.kill()
    proc.wait(timeout=30)
    P.gone_within(P.children(proc.pid), 2.0)
    assert P.snapshot(out) == before  # not one new figure beside the old report.md
    assert P.leftovers(out) == [f".report.partial-{proc.pid}"]
    result = _small_report(runs, out)
    assert not P.leftovers(out)
    assert "resnet20-s0" in result.report.read_text() and (out / "notes.txt").read_text() == "mine"
    assert all(p.exists() for p in result.files) and result.files[0] == out / "report.md"


def test_killed_between_its_two_renames_the_old_report_is_put_back(runs, old):
    """The state a report killed between `old aside` and `new in` leaves: no folder, the old
    one set aside and the new one beside; the next report restores the old one first."""
    out, before = old
    aside, partial = out.parent / f".report.old-{F.DEAD_PID}", out.parent / f".report.partial-{F.DEAD_PID}"
    out.rename(aside)
    (partial / "figures").mkdir(parents=True)
    (partial / "figures" / "curves.png").write_bytes(b"half")
    assert sorted(p.name for p in clean_leftovers(out)) == [aside.name, partial.name]
    assert P.snapshot(out) == before and not P.leftovers(out)
    out.rename(aside)  # again, now with a whole report after it
    result = _small_report(runs, out)
    assert not P.leftovers(out) and (out / "notes.txt").read_text() == "mine"
    assert "resnet20-s0" in result.report.read_text()


def test_leftovers_of_a_live_report_are_left_alone(runs, tmp_path):
    out = tmp_path / "report"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = tmp_path / f".report.partial-{live.pid}"
        theirs.mkdir()
        _small_report(runs, out)
        assert theirs.is_dir()  # another report still building there
    finally:
        live.kill()
        live.wait()
    _small_report(runs, out)
    assert not theirs.exists()


def test_user_files_are_carried_into_the_new_report(runs, old):
    out, before = old
    (out / "figures" / "my_sketch.png").write_bytes(b"sketch")
    (out / "data" / "mine.csv").write_text("a,b\n")
    (out / ".report.md.x1y2z3.tmp").write_text("what a killed atomic write leaves")
    os.symlink("notes.txt", out / "notes-link.txt")
    inode = (out / "notes.txt").stat().st_ino
    result = _small_report(runs, out)
    assert (out / "notes.txt").read_text() == "mine" and (out / "notes.txt").stat().st_ino == inode
    assert (out / "figures" / "my_sketch.png").read_bytes() == b"sketch"
    assert (out / "data" / "mine.csv").read_text() == "a,b\n"
    assert os.readlink(out / "notes-link.txt") == "notes.txt"
    assert not (out / ".report.md.x1y2z3.tmp").exists()
    assert (out / "figures" / "final_error.pdf").read_bytes() == before["figures/final_error.pdf"]  # older, kept
    assert (out / "figures" / "final_error.png").read_bytes() != before["figures/final_error.png"]  # rewritten
    assert not result.warnings and not P.leftovers(out)


def test_a_folder_holding_other_folders_is_written_file_by_file_and_says_so(runs, old, monkeypatch):
    out, before = old
    (out / "mine").mkdir()
    (out / "mine" / "big.bin").write_bytes(b"x")
    inode = (out / "mine").stat().st_ino
    result = _small_report(runs, out)
    assert (out / "mine").stat().st_ino == inode and (out / "mine" / "big.bin").read_bytes() == b"x"
    assert any("file by file" in w and "mine" in w for w in result.warnings), result.warnings
    assert "resnet20-s0" in result.report.read_text() and not P.leftovers(out)
    monkeypatch.chdir(out)  # --out . : the working directory is never moved away
    result = _small_report(runs, out)
    assert any("working directory" in w for w in result.warnings), result.warnings


def test_a_file_where_the_report_writes_a_folder_is_refused_before_anything_changes(runs, old):
    out, _ = old
    shutil.rmtree(out / "figures")
    (out / "figures").write_text("not a folder")
    before = P.snapshot(out)
    started = time.time()
    with pytest.raises(ReportError, match=r"figures is a file where the report writes a folder; move it away"):
        _small_report(runs, out)
    assert P.snapshot(out) == before and not P.leftovers(out)
    assert all(p.stat().st_mtime <= started for p in out.rglob("*"))
