"""Runs that cannot fit are refused before anything is built, with the estimate and the
machine's memory in the message; the estimate errs low against a measured peak."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from gradlab.config import load_preset, make_run_spec
from gradlab.memory import GB, available, estimate

AS_LIMIT = 12 * GB  # should a refusal ever fail, the oversized run dies here, not the machine


def gradlab(*args: str, cwd) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))

    return subprocess.run([sys.executable, "-m", "gradlab", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=limit, timeout=300, check=False)


@pytest.mark.parametrize("command", [["train", "resnet99998"], ["compare", "--depths", "20,99998"]])
@pytest.mark.slow
def test_a_run_that_cannot_fit_is_refused_before_anything_is_built(tmp_path, command):
    spec = make_run_spec("resnet99998", load_preset("quick"), steps=20)
    free, _ = available("cpu")
    assert estimate(spec).total > free  # deliberately oversized: 1.6 billion weights
    proc = gradlab(*command, "--preset", "quick", "--steps", "20", "--runs-dir", str(tmp_path / "runs"),
                   "--wandb", "disabled", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert "99998-s0 at batch 64 needs about" in error and "GB available on this machine" in error
    assert "smaller depth or --batch-size" in error
    assert not (tmp_path / "runs").exists()  # nothing trained, not even the resnet20 of the compare


@pytest.mark.slow
def test_the_estimate_errs_low_against_a_measured_peak(tmp_path):
    code = """
import resource, sys
from gradlab.config import load_preset, make_run_spec
from gradlab.train import train
spec = make_run_spec("resnet110", load_preset("quick"), steps=2, recipe={"batch_size": 128, "eval_every": 2},
                     data={"name": "synthetic", "synthetic_shape": (3, 32, 32), "synthetic_size": 256})
train(spec, sys.argv[1], progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    peak = int(proc.stdout.split()[-1])
    spec = make_run_spec("resnet110", load_preset("quick"), recipe={"batch_size": 128},
                         data={"name": "synthetic", "synthetic_shape": (3, 32, 32), "synthetic_size": 256})
    need = estimate(spec)
    assert need.activations > 0.9 * GB  # the batch dominates: 1M conv outputs per image, kept twice
    assert 0.5 * peak < need.total < peak  # low, but not uselessly so


def test_the_planned_size_of_digits_is_what_loading_it_gives():
    from gradlab.config import DataSpec
    from gradlab.data import load
    from gradlab.data.datasets import planned

    spec = DataSpec(name="digits")
    ds = load(spec)
    assert planned(spec) == (len(ds.train_y), ds.shape, ds.num_classes)
