"""Ctrl-C and SIGTERM on `gradlab report` while it draws (issue #32, item 8): the exit status
of an interrupted command (128 + the signal, as `gradlab train`), one line saying so and no
traceback, no drawing child left behind, and the old report untouched."""

from __future__ import annotations

import signal
import sys

import pytest

from tests import report_procs as P

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; the drawing child is forked"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return P.make_runs(tmp_path_factory.mktemp("runs"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_report_exits_as_interrupted_and_leaves_nothing_behind(runs, tmp_path, sig):
    out = tmp_path / "report"
    before = P.old_report(runs, out)
    proc = P.start_report(runs, out)
    kids = P.wait_drawing(proc)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    err = P.stderr(out)
    assert proc.returncode == 128 + sig, err  # 130 for Ctrl-C, 143 for SIGTERM: what train exits with
    assert "Traceback" not in err and "Aborted!" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and sig.name in lines[0], err
    assert not P.gone_within(kids, 2.0), "the drawing child outlived the report"
    assert P.snapshot(out) == before  # the old report, whole: not a figure of the new one in it
    assert not P.leftovers(out)  # its half-built folder went with it


def test_a_killed_report_takes_its_drawing_child_with_it(runs, tmp_path):
    out = tmp_path / "report"
    before = P.old_report(runs, out)
    proc = P.start_report(runs, out)
    kids = P.wait_drawing(proc)
    proc.kill()  # SIGKILL: no handler, no finally; the kernel's parent-death signal ends the child
    proc.wait(timeout=30)
    assert not P.gone_within(kids, 1.0), "the drawing child kept drawing after the report was killed"
    assert P.snapshot(out) == before
