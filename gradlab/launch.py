"""Where runs execute: in this process, in a pool of local worker processes, or as
submitit jobs (a SLURM job array, or submitit's local executor).

A launcher takes RunSpecs and reports each outcome through `on_done(spec, outcome)`,
where outcome is a RunResult or the exception that ended the run. The trainer knows
nothing of launchers; a run is the same wherever it executes. The local pool's workers
stop with it: on its SIGINT/SIGTERM, and when it is gone (SIGKILL).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gradlab import runs
from gradlab.config import RunSpec
from gradlab.file_io import read_json, write_json
from gradlab.errors import ConfigError, GradlabError, LauncherError, RunDirError, RunInterrupted, RunLockedError

OnStart = Callable[[RunSpec], None]
OnDone = Callable[[RunSpec, object], None]


class InProcess:
    """One run after another in this process (with the trainer's progress bar)."""

    def __init__(self, progress: bool | None = None, callbacks: list | None = None):
        self.progress = progress
        self.callbacks = callbacks

    def run(self, specs: list[RunSpec], runs_dir: Path, on_start: OnStart, on_done: OnDone) -> None:
        from gradlab.train import train

        for spec in specs:
            on_start(spec)
            try:
                outcome = train(spec, runs_dir, progress=self.progress, callbacks=self.callbacks)
            except RunLockedError as e:  # another process has it: leave it to them
                outcome = e
            except GradlabError:
                raise  # the user's to fix (bad data dir, clashing run dir): stop here
            except Exception as e:  # one broken run must not stop the others
                outcome = e
            on_done(spec, outcome)


# -- the local pool: workers that stop with their parent ---------------------------------
# The parent alone passes SIGINT/SIGTERM on to its workers, once each: they run in their own
# process group, so a terminal's Ctrl-C does not reach them twice (a second signal stops a
# run mid-step, without a checkpoint). A worker whose parent is gone (SIGKILLed) learns it
# from the kernel (Linux: PR_SET_PDEATHSIG, as SIGUSR1, which may come once per thread of the
# dying parent; elsewhere from a thread that watches its parent) and sends itself one
# SIGTERM: it stops at the end of its step like `gradlab train`, marks its run interrupted
# and exits, instead of training on and then waiting for its parent forever.
PR_SET_PDEATHSIG = 1
PARENT_GONE = signal.SIGUSR1
# one worker process's state: its parent's pid, the stop flag it shares with the parent,
# whether a run is under way, whether it has told itself to stop (its parent gone)
_worker = {"parent": None, "stopping": None, "in_task": False, "told": False}


@dataclass
class WorkerStopped:
    """What a worker returns for a run that a signal stopped (or kept from starting): an
    exception the pool can carry back (RunInterrupted does not unpickle)."""

    message: str
    exit_code: int


class _StopBeforeTraining(KeyboardInterrupt):
    """A signal to a worker between its runs, or before the trainer took signals over."""


def _parent_gone() -> bool:
    return _worker["told"] or (_worker["parent"] is not None and os.getppid() != _worker["parent"])


def _exit_worker(code: int) -> None:
    """End a worker whose parent is gone: nobody will read its result or give it more work."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _worker_signal(signum, frame) -> None:
    """SIGINT/SIGTERM outside the trainer's own handler (gradlab.interrupt)."""
    if _worker["in_task"]:
        raise _StopBeforeTraining(signal.Signals(signum).name)
    if _parent_gone():
        _exit_worker(128 + signum)
    # idle, the parent alive and stopping: it starts no more runs here (the shared flag)


def _parent_left(signum, frame) -> None:
    """The parent is gone: an idle worker exits; a training one sends itself one SIGTERM
    (none if the parent had passed one on already), so that its run stops after the step."""
    if not _worker["in_task"]:
        _exit_worker(128 + signal.SIGTERM)
    if _worker["told"] or _worker["stopping"].value:
        return
    _worker["told"] = True
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_at_once_when_stopping() -> None:
    """At a stopping worker's exit, after the other exit handlers: skip the interpreter's
    teardown of torch (seconds after a run) that the parent's shutdown would wait for."""
    stopping = _worker["stopping"]
    if _worker["told"] or (stopping is not None and stopping.value):
        _exit_worker(128 + (stopping.value or signal.SIGTERM))


def _die_with_parent() -> bool:
    """Ask Linux for PARENT_GONE when the parent exits (strictly: the parent's thread that
    started this worker, the main thread, since the pool starts workers on submit); False
    where that cannot be asked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(PARENT_GONE), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int, every_s: float = 0.5) -> None:
    """Where the kernel cannot be asked: PARENT_GONE to this process once the parent is gone."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os.kill(os.getpid(), PARENT_GONE)


def _worker_started(parent: int, stopping) -> None:
    """A worker's initializer: its own process group, the parent's signals, its death."""
    _worker.update(parent=parent, stopping=stopping)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _worker_signal)
    signal.signal(PARENT_GONE, _parent_left)
    if not _die_with_parent():
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="gradlab-parent").start()
    atexit.register(_exit_at_once_when_stopping)  # registered first, so it runs last
    if os.getppid() != parent:  # it died before the kernel was asked
        _exit_worker(128 + signal.SIGTERM)


def _train_in_worker(spec: RunSpec, runs_dir: str, threads: int, callbacks: list | None):
    """One run in a worker; a WorkerStopped when a signal stopped it or kept it from starting."""
    import torch

    from gradlab.train import train

    stopping = _worker["stopping"]
    if stopping is not None and stopping.value:
        return WorkerStopped(f"{spec.name} not started", 128 + stopping.value)
    _worker["in_task"] = True
    try:
        torch.set_num_threads(threads)
        return train(spec, runs_dir, progress=False, callbacks=callbacks)
    except RunInterrupted as e:
        return WorkerStopped(str(e), e.exit_code)
    except _StopBeforeTraining as e:
        return WorkerStopped(f"{spec.name} stopped by {e} before training", 128 + signal.Signals[str(e)])
    finally:
        _worker["in_task"] = False
        if _parent_gone():
            _exit_worker(128 + signal.SIGTERM)


class _Forwarder:
    """The parent's SIGINT/SIGTERM while its workers train: passed on to each worker (which
    stops at the end of its step and marks its run interrupted), and no further run starts."""

    def __init__(self, stopping):
        self.stopping = stopping  # shared with the workers: the signal number, 0 until one comes
        self.signum: int | None = None
        self.pool: ProcessPoolExecutor | None = None

    def __call__(self, signum, frame) -> None:
        self.signum = self.stopping.value = signum
        processes = getattr(self.pool, "_processes", None) or {}  # pid -> Process (the pool's own, 3.8 to 3.13)
        for pid in list(processes):
            with contextlib.suppress(OSError):
                os.kill(pid, signum)

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach the main thread only: nothing to install
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class LocalPool:
    """`jobs` runs at a time in worker processes; the CPU threads are shared out among them.
    SIGINT/SIGTERM stop every worker's run after its step, then raise RunInterrupted here."""

    def __init__(self, jobs: int, callbacks: list | None = None, threads: int | None = None):
        self.jobs = jobs
        self.callbacks = callbacks
        self.threads = threads  # shared out among the workers; default: every core

    def run(self, specs: list[RunSpec], runs_dir: Path, on_start: OnStart, on_done: OnDone) -> None:
        threads = max(1, (self.threads or os.cpu_count() or 1) // self.jobs)
        ctx = multiprocessing.get_context("spawn")
        forward = _Forwarder(ctx.RawValue("i", 0))
        with forward.installed(), ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx,
                                                      initializer=_worker_started,
                                                      initargs=(os.getpid(), forward.stopping)) as pool:
            forward.pool = pool
            futures, unsent = {}, []
            for spec in specs:
                if forward.signum is not None:
                    unsent.append(spec)
                    continue
                on_start(spec)
                futures[pool.submit(_train_in_worker, spec, str(runs_dir), threads, self.callbacks)] = spec
            stopped = unsent + _collect(futures, forward, on_done)
        if forward.signum is not None:
            raise RunInterrupted(_stopped_message(forward.signum, stopped, runs_dir), 128 + forward.signum)


def _collect(futures: dict, forward: _Forwarder, on_done: OnDone) -> list[RunSpec]:
    """Report each run through on_done as it ends; once the parent is stopping, the rest do not
    start and what ends is only listed (returned: the runs a signal stopped or kept back)."""
    stopped = []
    for future in as_completed(futures):
        if forward.signum is not None:
            for f in futures:
                f.cancel()
        spec = futures[future]
        outcome = None if future.cancelled() else _outcome(future, futures)
        if forward.signum is not None or isinstance(outcome, WorkerStopped):
            stopped.append(spec)
        if forward.signum is not None:
            continue  # said once by the parent, for them all
        if isinstance(outcome, WorkerStopped):  # a signal to this worker alone: the others go on
            outcome = RunInterrupted(outcome.message, outcome.exit_code)
        on_done(spec, outcome)
    return stopped


def _outcome(future, futures) -> object:
    """A finished future's RunResult, WorkerStopped or exception; the user's errors stop the pool."""
    try:
        return future.result()
    except RunLockedError as e:  # another process has it: leave it to them
        return e
    except GradlabError:  # the user's to fix (bad data dir, clashing run dir): stop here
        for f in futures:
            f.cancel()
        raise
    except Exception as e:  # one broken run must not stop the others
        return e


def _stopped_message(signum: int, stopped: list[RunSpec], runs_dir: Path) -> str:
    """What the parent says when a signal stopped its workers: how far each run got."""
    where, waiting = [], 0
    for spec in stopped:
        status = runs.read_status(runs.run_dir_for(spec, runs_dir))
        if status.get("state") == runs.PENDING:
            waiting += 1
        else:
            where.append(f"{spec.name} {status.get('state')} at step {status.get('step', 0)}")
    if waiting:
        where.append(f"{waiting} run(s) not started")
    return (f"compare stopped by {signal.Signals(signum).name}: its workers stopped and marked their runs "
            f"({'; '.join(where) or 'no run had started'}); rerun the same command to resume")


def make_launcher(jobs: int = 1, progress: bool | None = None, callbacks: list | None = None,
                  threads: int | None = None):
    if jobs < 1:
        raise GradlabError(f"--jobs must be at least 1, got {jobs}")
    return InProcess(progress, callbacks) if jobs == 1 else LocalPool(jobs, callbacks, threads)


# -- submitit: SLURM job arrays, or the same path with local subprocesses ----------------

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
