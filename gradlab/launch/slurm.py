"""submitit jobs: a SLURM job array, or the same path with submitit's local executor; each
run directory remembers its job (submitted.json), so a rerun waits for a live job instead
of submitting a second one."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gradlab import runs
from gradlab.config import RunSpec
from gradlab.file_io import read_json, write_json
from gradlab.errors import ConfigError, LauncherError, RunDirError
from gradlab.launch.local import OnDone, OnStart


LAUNCHERS = ("local", "slurm", "submitit-local")
SUBMITTED = runs.SUBMITTED  # in a run directory: the job that was last submitted for it
SUBMITIT_DIR = ".submitit"  # in <runs-dir>/<experiment>/: submitit's pickles and job logs
# SLURM states of a job that may still train its run (the rest have ended); UNKNOWN: sacct
# does not know the job (yet), or a local job of another machine, so assume it may
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                 "RESIZING", "SUSPENDED", "STOPPED", "PREEMPTED", "SIGNALING", "STAGE_OUT", "UNKNOWN"}
DEFAULT_TIMEOUT_MIN = 24 * 60


class JobFailed(Exception):
    """A submitted job ended without training its run: the error it raised, or how it ended."""


@dataclass
class Submission:
    """One run's job: submitted now (`new`), or an earlier one still pending or running.

    record: what the run's submitted.json says (launcher, job_id, folder, host, log paths).
    """

    spec: RunSpec
    run_dir: Path
    record: dict
    new: bool
    state: str = "SUBMITTED"
    job: object = field(default=None, repr=False)  # submitit Job, when submitted by this process

    @property
    def job_id(self) -> str:
        return str(self.record["job_id"])

    @property
    def paths(self):
        return _job_paths(self.record)


class _TrainTask:
    """What a submitit job runs: one run. Checkpointable: on a SLURM timeout or preemption
    submitit requeues the same call, and the trainer resumes from the run's checkpoint."""

    def __call__(self, spec: RunSpec, runs_dir: str, threads: int | None, callbacks: list | None):
        import torch

        from gradlab.train import train

        if threads:
            torch.set_num_threads(threads)
        # submitit's preemption/timeout signal (USR2): the trainer checkpoints at the end of the
        # step, then hands the signal on to submitit, which requeues the job from there
        preempt = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
        return train(spec, runs_dir, progress=False, callbacks=callbacks, handoff=(preempt,))

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def slurm_available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("srun") is not None


class SubmititLauncher:
    """All todo runs of an experiment as one submitit job array; `run` waits for them.

    cluster "slurm": submitit.AutoExecutor on SLURM (one array task per run, each with
    `gpus_per_run` GPUs); "local": submitit.LocalExecutor, one subprocess per run, all at
    once (for trying a sweep without SLURM). Jobs write their pickles and logs into
    <runs-dir>/<experiment>/.submitit/, and each run directory gets a submitted.json naming
    its job, so that submitting again skips runs whose job is still pending or running.
    """

    def __init__(self, cluster: str = "slurm", partition: str | None = None, gpus_per_run: int | None = None,
                 cpus_per_run: int | None = None, timeout_min: int | None = None,
                 array_parallelism: int | None = None, callbacks: list | None = None,
                 notify: Callable[[str], None] = lambda message: None, poll_s: float | None = None):
        if cluster not in ("slurm", "local"):
            raise ConfigError(f"submitit cluster must be slurm or local, not {cluster!r}")
        for name, value in (("gpus_per_run", gpus_per_run), ("cpus_per_run", cpus_per_run),
                            ("timeout_min", timeout_min), ("array_parallelism", array_parallelism)):
            least = 0 if name == "gpus_per_run" else 1
            if value is not None and value < least:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
        if cluster == "local" and (partition or array_parallelism):
            raise ConfigError("--partition and --array-parallelism apply to --launcher slurm only")
        self.cluster = cluster
        self.partition = partition
        self.gpus_per_run = (1 if cluster == "slurm" else 0) if gpus_per_run is None else gpus_per_run
        self.cpus_per_run = cpus_per_run
        self.timeout_min = timeout_min or DEFAULT_TIMEOUT_MIN
        self.array_parallelism = array_parallelism
        self.callbacks = callbacks
        self.notify = notify
        self.poll_s = poll_s if poll_s is not None else (15.0 if cluster == "slurm" else 0.5)

    @property
    def name(self) -> str:
        return "slurm" if self.cluster == "slurm" else "submitit-local"

    def check_available(self) -> None:
        if self.cluster == "slurm" and not slurm_available():
            raise LauncherError(
                "SLURM is not available here (no sbatch/srun on PATH): run this on the cluster's login node, "
                "or train here with --launcher local (the default), or try the job path locally with "
                "--launcher submitit-local"
            )

    def _executor(self, folder: Path, count: int, experiment: str):
        import submitit

        if self.cluster == "slurm":
            executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
            params = {"slurm_partition": self.partition, "cpus_per_task": self.cpus_per_run,
                      "slurm_array_parallelism": self.array_parallelism or count}
        else:
            executor = submitit.LocalExecutor(folder=folder)
            params = {}
        executor.update_parameters(name=f"gradlab-{experiment}", timeout_min=self.timeout_min, nodes=1,
                                   tasks_per_node=1, gpus_per_node=self.gpus_per_run,
                                   **{k: v for k, v in params.items() if v is not None})
        return executor

    def _threads(self, count: int) -> int | None:
        if self.cpus_per_run:
            return self.cpus_per_run
        if self.cluster == "local":  # every run at once on this machine: share its CPUs out
            return max(1, (os.cpu_count() or 1) // count)
        return None  # SLURM: the job's allocation decides

    def submit(self, specs: list[RunSpec], runs_dir: Path, on_start: OnStart = lambda spec: None) -> list[Submission]:
        """Submit the runs that have no live job, one array per experiment; return every run's job."""
        self.check_available()
        runs_dir = Path(runs_dir).absolute()  # jobs may start elsewhere
        out: list[Submission] = []
        for experiment in dict.fromkeys(s.experiment for s in specs):
            folder = runs_dir / experiment / SUBMITIT_DIR
            todo = []
            for spec in (s for s in specs if s.experiment == experiment):
                run_dir = runs.run_dir_for(spec, runs_dir)
                earlier = live_job(run_dir)
                if earlier is None:
                    todo.append(spec)
                    continue
                record, state = earlier
                out.append(Submission(spec, run_dir, record, new=False, state=state))
                self.notify(f"{spec.name}: job {record['job_id']} is still {state.lower()}; not submitted again "
                            f"(if that job is gone, delete {run_dir / SUBMITTED})")
            if not todo:
                continue
            executor = self._executor(folder, len(todo), experiment)
            threads = self._threads(len(todo))
            with executor.batch():
                jobs = [executor.submit(_TrainTask(), spec, str(runs_dir), threads, self.callbacks) for spec in todo]
            for spec, job in zip(todo, jobs):
                record = {"launcher": self.name, "job_id": str(job.job_id), "folder": str(folder),
                          "host": socket.gethostname(), "submitted": runs.now_iso()}
                paths = _job_paths(record)
                record.update(stdout=str(paths.stdout), stderr=str(paths.stderr))
                sub = Submission(spec, runs.run_dir_for(spec, runs_dir), record, new=True, job=job)
                write_json(sub.run_dir / SUBMITTED, record)
                on_start(spec)
                out.append(sub)
        return out

    def run(self, specs: list[RunSpec], runs_dir: Path, on_start: OnStart, on_done: OnDone) -> None:
        self.wait(self.submit(specs, runs_dir, on_start), on_done)

    def wait(self, submissions: list[Submission], on_done: OnDone) -> None:
        """Report each run through on_done as its job ends (new and earlier jobs alike)."""
        pending = list(submissions)
        while pending:
            for sub in list(pending):
                if _job_ended(sub):
                    pending.remove(sub)
                    on_done(sub.spec, job_outcome(sub))
            if pending:
                time.sleep(self.poll_s)


def live_job(run_dir: Path) -> tuple[dict, str] | None:
    """(submitted.json record, state) of the run's earlier job if it may still train the run."""
    path = Path(run_dir) / SUBMITTED
    if not path.exists():
        return None
    try:
        record = read_json(path)
        state = job_state(record)
    except (RunDirError, KeyError, ValueError):
        return None  # damaged: nothing to go on, so submit again (the run lock still guards the run)
    return (record, state) if state in ACTIVE_STATES else None


def _job_paths(record: dict):
    from submitit.core.utils import JobPaths

    return JobPaths(Path(record["folder"]), str(record["job_id"]), 0)


def job_state(record: dict) -> str:
    """State of a recorded job: a SLURM state (from sacct) or, for local jobs, RUNNING or FINISHED."""
    job_id = str(record["job_id"])
    if _job_paths(record).result_pickle.exists():
        return "COMPLETED"
    if record.get("launcher") == "slurm":
        from submitit.slurm.slurm import SlurmJob

        state = SlurmJob(folder=record["folder"], job_id=job_id).watcher.get_state(job_id, mode="force")
        return (state.split() or ["UNKNOWN"])[0]
    if record.get("host") != socket.gethostname():
        return "UNKNOWN"  # a local job of another machine: cannot tell from here
    return "RUNNING" if _local_job_alive(job_id) else "FINISHED"


def _local_job_alive(job_id: str) -> bool:
    """Whether submitit's local controller process `job_id` (its pid) is still running."""
    try:
        with open(f"/proc/{int(job_id)}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{int(job_id)}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError, IndexError):
        return False
    return state != "Z" and b"submitit" in cmdline  # a zombie has ended; another program reused the pid


def _job_ended(sub: Submission) -> bool:
    if sub.paths.result_pickle.exists():
        return True
    if sub.job is not None:
        return sub.job.done()  # polls the local process, or sacct (at most every minute or so)
    return job_state(sub.record) not in ACTIVE_STATES


def job_outcome(sub: Submission):
    """The RunResult a job returned, or a JobFailed saying why there is none."""
    from submitit.core.utils import pickle_load

    path = sub.paths.result_pickle
    for _ in range(10):  # a shared filesystem may show the result a moment after the job ended
        if path.exists():
            break
        time.sleep(0.5)
    if not path.exists():
        state = getattr(sub.job, "state", "") if sub.job is not None else ""
        how = f" ({state})" if state else ""
        return JobFailed(f"job {sub.job_id} ended{how} without a result; see {sub.paths.stderr}")
    status, value = pickle_load(path)
    if status == "success":
        return value
    last = [line for line in str(value).strip().splitlines() if line.strip()][-1:] or ["unknown error"]
    return JobFailed(f"{last[0].strip()} (job {sub.job_id}; log: {sub.paths.stderr})")
