"""Sweeps through submitit: real jobs in subprocesses (submitit's LocalExecutor), the
records that keep a run from being submitted twice, and the SLURM submission itself.

SLURM cannot run here, so the last test puts stand-in `sbatch`, `srun` and `sacct` scripts on
PATH: they accept the submission and report the job as pending, which is enough to check the
job array gradlab asks for and the re-submission rule. Everything else runs for real.
"""

import json
import os
import shutil
import signal
import stat
import time

import pytest
from click.testing import CliRunner

from gradlab import runs
from gradlab.cli.main import cli
from gradlab.compare import compare, plan
from gradlab.config import load_preset
from gradlab.callbacks import Callback
from gradlab.launch import SUBMITIT_DIR, SUBMITTED, JobFailed, SubmititLauncher, live_job
from gradlab.launch.slurm import _TrainTask

SMALL = {"steps": 12, "recipe": {"batch_size": 32, "eval_every": 6, "checkpoint_every": 6}}


def record_outcomes():
    outcomes = {}
    return outcomes, lambda spec, outcome: outcomes.update({spec.name: outcome})


@pytest.mark.slow
def test_a_sweep_as_local_jobs_no_wait_no_double_submission_then_report(tmp_path):
    runs_dir = tmp_path / "runs"
    args = ["compare", "--preset", "quick", "--depths", "8", "--steps", "12", "--batch-size", "32",
            "--launcher", "submitit-local", "--runs-dir", str(runs_dir), "--no-wait"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "plain8-s0: submitted as job" in first.output and "resnet8-s0: submitted as job" in first.output
    assert f"gradlab report {runs_dir}/quick-digits" in first.output and "_0_log.err" in first.output
    folder = runs_dir / "quick-digits" / SUBMITIT_DIR
    specs = plan(load_preset("quick"), (8,), ("plain", "resnet"), (0,), steps=12, recipe={"batch_size": 32})
    run_dirs = [runs_dir / "quick-digits" / s.name for s in specs]
    assert all(live_job(d) is not None for d in run_dirs)  # both jobs are starting or training
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert "resnet8-s0: job" in second.output and "still running; not submitted again" in second.output
    assert "0 run(s) submitted, 2 still queued or running" in second.output
    assert len(list(folder.glob("*_submitted.pkl"))) == 2
    # A later waiting compare adopts the earlier jobs instead of submitting others.
    outcomes, on_done = record_outcomes()
    SubmititLauncher("local", poll_s=0.2).run(specs, runs_dir, lambda spec: None, on_done)
    assert {n: o.state for n, o in outcomes.items()} == {"plain8-s0": "done", "resnet8-s0": "done"}
    for d in run_dirs:
        record = json.loads((d / SUBMITTED).read_text())
        assert (folder / f"{record['job_id']}_0_result.pkl").exists() and os.path.exists(record["stderr"])
        assert json.loads((d / runs.STATUS).read_text())["pid"] != os.getpid()  # trained in another process
        assert live_job(d) is None
    files, messages = sorted(folder.iterdir()), []
    again = compare(specs, runs_dir, notify=messages.append, launcher=SubmititLauncher("local"), wait=False)
    assert again.submitted == [] and sorted(folder.iterdir()) == files
    assert any("2 of 2 runs already finished" in m for m in messages)
    report = CliRunner().invoke(cli, ["report", str(runs_dir / "quick-digits"), "--out", str(tmp_path / "rep"),
                                      "--formats", "png"])
    assert report.exit_code == 0, report.output
    table = (tmp_path / "rep" / "table.md").read_text()
    assert "plain-8" in table and "ResNet-8" in table


@pytest.mark.slow
def test_a_job_that_raises_is_that_runs_outcome(tmp_path):
    bad = plan(load_preset("quick"), (8,), ("resnet",), (0,), steps=2,
               data={"name": "imagefolder", "data_dir": str(tmp_path / "nowhere")})
    outcomes, on_done = record_outcomes()
    SubmititLauncher("local", poll_s=0.2).run(bad, tmp_path / "runs", lambda spec: None, on_done)
    (outcome,) = outcomes.values()
    assert isinstance(outcome, JobFailed)
    assert "DataError" in str(outcome) and "does not exist" in str(outcome) and "_0_log.err" in str(outcome)


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="SLURM is installed here")
def test_slurm_without_sbatch_is_a_clear_error(tmp_path):
    out = CliRunner().invoke(cli, ["compare", "--preset", "quick", "--depths", "8", "--launcher", "slurm",
                                   "--runs-dir", str(tmp_path / "runs")])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "SLURM is not available here" in out.output and "--launcher submitit-local" in out.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flags, message", [
    (["--launcher", "slurm", "--jobs", "4"], "--jobs is for --launcher local"),
    (["--partition", "gpu"], "--partition apply to submitted jobs; add --launcher slurm"),
    (["--no-wait"], "--no-wait apply to submitted jobs"),
    (["--launcher", "submitit-local", "--array-parallelism", "2"], "--array-parallelism apply to --launcher slurm only"),
])  # fmt: skip
def test_nonsense_launcher_options_are_usage_errors(tmp_path, flags, message):
    out = CliRunner().invoke(cli, ["compare", "--preset", "quick", "--runs-dir", str(tmp_path / "runs"), *flags])
    assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output


def _stand_in(bin_dir, name, body):
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_slurm_submits_one_array_with_the_options_and_skips_pending_runs(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch-calls"
    _stand_in(bin_dir, "sbatch", f'echo "$@" >> {calls}\necho "Submitted batch job 4242"\n')
    _stand_in(bin_dir, "srun", "exit 1\n")
    _stand_in(bin_dir, "sacct", 'printf "JobID|State|NodeList\\n4242_0|PENDING|\\n4242_1|PENDING|\\n"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    runs_dir = tmp_path / "runs"
    args = ["compare", "--preset", "quick", "--depths", "8", "--launcher", "slurm", "--partition", "gpu",
            "--timeout-min", "240", "--runs-dir", str(runs_dir), "--no-wait"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    folder = runs_dir / "quick-digits" / SUBMITIT_DIR
    script = (folder / "4242_submission.sh").read_text()
    for line in ("--array=0-1%2", "--partition=gpu", "--gpus-per-node=1", "--time=240", "--ntasks-per-node=1",
                 "--job-name=gradlab-quick-digits", f"--output={folder}/%A_%a_0_log.out"):
        assert f"#SBATCH {line}\n" in script
    assert "-m submitit.core._submit" in script
    assert {json.loads((runs_dir / "quick-digits" / n / SUBMITTED).read_text())["job_id"]
            for n in ("plain8-s0", "resnet8-s0")} == {"4242_0", "4242_1"}
    assert "plain8-s0: submitted as job 4242_0" in first.output
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert "plain8-s0: job 4242_0 is still pending; not submitted again" in second.output
    assert len(calls.read_text().splitlines()) == 1  # sbatch was called once, by the first command


class StartLog(Callback):
    """Appends the step each (re)start of the run begins at."""

    def __init__(self, path):
        self.path = str(path)

    def on_start(self, run_dir, record, resumed):
        step = json.loads((run_dir / runs.STATUS).read_text())["step"]
        with open(self.path, "a") as f:
            f.write(f"{step}\n")


@pytest.mark.slow
def test_a_preempted_job_checkpoints_where_it_stopped_and_its_requeued_job_resumes_there(tmp_path):
    """submitit's preemption signal (USR2) ends the step, the trainer checkpoints, and submitit
    requeues the job: the run resumes at that step, not at the last periodic checkpoint."""
    import submitit

    spec = plan(load_preset("quick"), [8], ["resnet"], [0], steps=400,
                recipe={"batch_size": 32, "eval_every": 20, "checkpoint_every": 400, "record": False})[0]
    runs_dir, log = tmp_path / "runs", tmp_path / "starts.txt"
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=5)
    job = executor.submit(_TrainTask(), spec, str(runs_dir), 1, [StartLog(log)])
    run_dir = runs_dir / spec.experiment / spec.name
    deadline = time.time() + 120
    while not ((run_dir / runs.STATUS).exists() and len(runs.read_run(run_dir).metrics) >= 2):  # past step 20
        assert time.time() < deadline and not job.done(), job.stderr()
        time.sleep(0.2)
    pid = json.loads((run_dir / runs.STATUS).read_text())["pid"]  # the task's process
    os.kill(pid, signal.SIGUSR2)  # what SLURM sends before a timeout or on preemption (submitit's default)
    result = job.result()
    assert result.state == runs.DONE and result.step == 400
    starts = [int(s) for s in log.read_text().split()]
    assert len(starts) == 2 and starts[0] == 0
    assert 20 <= starts[1] < 400  # the step it was stopped at: nothing since was lost
