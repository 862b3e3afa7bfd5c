"""A script that never calls rec.stop() leaves a run with its rows on disk and a status that
says how it ended (normal exit, an uncaught exception, Ctrl-C, the recorder collected), and
one line naming the missing stop(); a stopped run gets no such line. Each case runs in its
own Python process, as a user's script does."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gradlab import runs

SETUP = """
import gc, sys, warnings
import torch, torch.nn as nn
import gradlab
warnings.simplefilter("always")
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)

def train(rec, steps=3):
    for step in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 4)).square().mean().backward()
        rec.step(step)
        rec.log(step, train_loss=1.0 / (step + 1))
        opt.step()
"""

LINE = "without rec.stop(); the run in"

CASES = {
    "exit": ("rec = gradlab.watch(model, run_dir=RUN, every=1)\ntrain(rec)\n",
             0, runs.DONE, "the process ended without rec.stop()"),
    "uncaught": ("rec = gradlab.watch(model, run_dir=RUN, every=1)\ntrain(rec)\nraise ValueError('bad batch')\n",
                 1, runs.FAILED, "ValueError: bad batch (the process ended without rec.stop())"),
    "ctrl_c": ("rec = gradlab.watch(model, run_dir=RUN, every=1)\ntrain(rec)\nraise KeyboardInterrupt\n",
               None, runs.INTERRUPTED, "KeyboardInterrupt:  (the process ended without rec.stop())"),
    "collected": ("def run():\n    net = nn.Sequential(nn.Linear(4, 2))\n    rec = gradlab.watch(net, run_dir=RUN, every=1)\n"
                  "    net(torch.randn(8, 4)).sum().backward()\n    rec.step(0)\n    rec.log(0, train_loss=1.0)\n"
                  "run()\ngc.collect()\nimport json\nstate = json.load(open(RUN + '/status.json'))['state']\n"
                  "print('before exit:', state)\n",
                  0, runs.DONE, "the recorder was garbage-collected without rec.stop()"),
}  # fmt: skip


def _script(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    run = tmp_path / "run"
    code = SETUP + f"RUN = {str(run)!r}\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_never_stopped_is_written_and_says_how_it_ended(tmp_path, case):
    body, rc, state, message = CASES[case]
    done = _script(tmp_path, body)
    assert rc is None or done.returncode == rc, done.stderr
    status = runs.read_status(tmp_path / "run")
    assert (status["state"], status["message"]) == (state, message)
    run = runs.read_run(tmp_path / "run")
    assert run.has_layers and len(run.layers) and len(run.metrics) and run.state == state
    assert run.metrics["step"].tolist() == sorted(set(run.metrics["step"]))
    said = [line for line in done.stderr.splitlines() if LINE in line]
    assert len(said) == 1 and f"marked {state}" in said[0] and "Call rec.stop()" in said[0], done.stderr
    if case == "collected":  # closed when collected, not at exit
        assert "before exit: done" in done.stdout


@pytest.mark.parametrize("body", ["with gradlab.watch(model, run_dir=RUN, every=1) as rec:\n    train(rec)\n",
                                  "rec = gradlab.watch(model, run_dir=RUN, every=1)\ntrain(rec)\nrec.stop()\n",
                                  "with gradlab.watch(model, run_dir=RUN, every=1) as rec:\n    train(rec)\n"
                                  "    raise ValueError('inside')\n"])  # fmt: skip
def test_a_stopped_run_gets_no_line_about_stop(tmp_path, body):
    done = _script(tmp_path, body)
    assert LINE not in done.stderr
    status = runs.read_status(tmp_path / "run")
    assert status["state"] in (runs.DONE, runs.FAILED) and "rec.stop()" not in status["message"]


def test_a_recorder_without_run_dir_says_nothing_at_exit(tmp_path):
    done = _script(tmp_path, "rec = gradlab.watch(model, every=1)\ntrain(rec, 1)\n")
    assert done.returncode == 0 and LINE not in done.stderr and "gradlab" not in done.stderr


def test_a_forked_child_that_exits_leaves_its_parents_run_alone(tmp_path):
    body = ("import os\nrec = gradlab.watch(model, run_dir=RUN, every=1)\ntrain(rec)\npid = os.fork()\n"
            "if pid == 0:\n    sys.exit(0)\nos.waitpid(pid, 0)\nimport json\n"
            "print('after child:', json.load(open(RUN + '/status.json'))['state'])\nrec.stop()\n")  # fmt: skip
    done = _script(tmp_path, body)
    assert "after child: running" in done.stdout, done.stderr
    assert LINE not in done.stderr and runs.read_status(tmp_path / "run")["state"] == runs.DONE


def test_a_run_never_stopped_that_cannot_be_written_at_exit_says_so_in_one_line(tmp_path):
    body = ("import resource, signal\nrec = gradlab.watch(model, run_dir=RUN, every=1)\ntrain(rec)\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\nresource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))\n")
    done = _script(tmp_path, body)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "without rec.stop()" in line]
    assert len(said) == 1 and "could not be closed" in said[0] and "Traceback" not in done.stderr
