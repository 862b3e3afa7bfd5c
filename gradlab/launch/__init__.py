"""Where runs execute: in this process (local), in a pool of local worker processes that
stop with their parent (pool, worker), or as submitit jobs: a SLURM job array, or
submitit's local executor (slurm).

A launcher takes RunSpecs and reports each outcome through ``on_done(spec, outcome)``,
where outcome is a RunResult or the exception that ended the run. The trainer knows
nothing of launchers; a run is the same wherever it executes.
"""

from __future__ import annotations

from gradlab.errors import GradlabError
from gradlab.launch.local import InProcess, OnDone, OnStart
from gradlab.launch.pool import LocalPool
from gradlab.launch.slurm import (LAUNCHERS, SUBMITIT_DIR, SUBMITTED, JobFailed, SubmititLauncher, Submission,
                                  job_outcome, job_state, live_job, slurm_available)

__all__ = ["LAUNCHERS", "SUBMITIT_DIR", "SUBMITTED", "InProcess", "JobFailed", "LocalPool", "OnDone", "OnStart",
           "SubmititLauncher", "Submission", "job_outcome", "job_state", "live_job", "make_launcher",
           "slurm_available"]


def make_launcher(jobs: int = 1, progress: bool | None = None, callbacks: list | None = None,
                  threads: int | None = None):
    """This process for one job at a time, else a pool of ``jobs`` workers sharing ``threads``."""
    if jobs < 1:
        raise GradlabError(f"--jobs must be at least 1, got {jobs}")
    return InProcess(progress, callbacks) if jobs == 1 else LocalPool(jobs, callbacks, threads)
