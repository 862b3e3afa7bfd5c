"""`compare`: plan one run per (family, depth, seed), train what is not done, report.

Finished runs are reused, interrupted ones resume (the trainer decides from the run
directory), a diverged run is reported as such and the others go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gradlab import families as fam
from gradlab import models, run_tables, runs
from gradlab.models.complexity import complexity
from gradlab.config import Preset, RunSpec, make_run_spec
from gradlab.errors import ConfigError, RunInterrupted, RunLockedError
from gradlab.environment import resolve_device
from gradlab.output_folders import check_output_folder
from gradlab.memory import check_fits
from gradlab.launch import make_launcher
from gradlab.run_lock import RunLock
from gradlab.sweep import grid, varied
from gradlab.eta import estimate
from gradlab.train.run_fields import check_existing


def plan(preset: Preset, depths, families, seeds, sweep: dict | None = None, **overrides) -> list[RunSpec]:
    """One RunSpec per (family, depth, swept values, seed), shallow first so results arrive
    early; runs are named by the values the sweep varies (gradlab.sweep). Stochastic depth
    (model option drop_path) goes to the residual families only."""
    names = [(d, f, models.model_name(f, d, preset.compare.arch)) for d in depths for f in families]
    sweep = sweep or {}
    combos = [_with_values(overrides, values, varied(sweep)) for values in grid(sweep)]
    return [make_run_spec(name, preset, seed=s, **_for_family(f, o)) for d, f, name in sorted(names)
            for o in combos for s in seeds]  # fmt: skip


def _with_values(overrides: dict, values: dict, named_by: tuple[str, ...]) -> dict:
    """make_run_spec's keywords with one combination of swept values (steps scales the
    milestones as --steps does)."""
    values = dict(values)
    steps = values.pop("steps", overrides.get("steps"))
    recipe = {**(overrides.get("recipe") or {}), **values}
    return {**overrides, "steps": steps, "recipe": recipe, "named_by": named_by}


def _for_family(family: str, overrides: dict) -> dict:
    options = overrides.get("model_options") or {}
    if options.get("drop_path") and not fam.get(family).residual:  # a plain net has no branch to drop
        return {**overrides, "model_options": {**options, "drop_path": None}}
    return overrides


@dataclass
class CompareResult:
    run_dirs: list[Path]
    outcomes: dict[str, str] = field(default_factory=dict)  # run name -> state or error
    report_dir: Path | None = None
    report_warnings: list[str] = field(default_factory=list)
    report: object = None  # gradlab.report.ReportResult
    submitted: list = field(default_factory=list)  # gradlab.launch.Submission, when not waiting

    @property
    def failed(self) -> list[str]:
        return [n for n, s in self.outcomes.items() if s not in runs.FINISHED_STATES]


def cost(spec: RunSpec) -> float:
    """Relative cost of a run, for the ETA: iterations x batch x the model's multiply-adds
    per input (analytic, at the architecture's own input size)."""
    _, macs = complexity(spec.model.name, shortcut=spec.model.shortcut, norm=spec.model.norm)
    return spec.recipe.steps * spec.recipe.batch_size * max(macs, 1)


def compare(specs: list[RunSpec], runs_dir: str | Path = "runs", out: str | Path | None = None, jobs: int = 1,
            formats=("pdf", "png"), style: str = "paper", progress: bool | None = None,
            notify: Callable[[str], None] = lambda message: None, callbacks: list | None = None,
            launcher=None, wait: bool = True, threads: int | None = None, eta: bool = True,
            report_options: dict | None = None) -> CompareResult:
    """Train every planned run that is not finished, then build the report.

    launcher: where runs execute (default: this process, or `jobs` local workers sharing
    ``threads`` CPU threads, default all); see gradlab.launch. wait=False submits the runs (a launcher with `submit`, such as
    SubmititLauncher) and returns at once with `submitted` filled in and no report.
    eta: say how long the runs to train will take before the first starts (gradlab.eta).
    report_options: more keywords of gradlab.report.build_report (select=("lr",), ...).
    """
    runs_dir = check_output_folder(runs_dir, "--runs-dir")
    out = check_output_folder(out or Path("reports") / specs[0].experiment, "--out")  # before any training
    dirs = [runs.run_dir_for(s, runs_dir) for s in specs]
    todo = [s for s, d in zip(specs, dirs) if _state(d) not in runs.FINISHED_STATES]
    result = CompareResult(run_dirs=dirs)
    for s, d in zip(specs, dirs):  # reused or resumed only when its whole spec is this plan's: refused first
        check_existing(d, s)
    reused = [(s, d) for s, d in zip(specs, dirs) if s not in todo]
    for s, d in reused:
        result.outcomes[s.name] = _state(d)
    if reused:
        notify(f"{len(reused)} of {len(specs)} runs already finished in {runs_dir} with the same recipe; reusing them")
    if todo and eta:
        seconds, basis = estimate(todo, reused, cost, jobs, probe=not hasattr(launcher, "submit"))
        about = f"about {_duration(seconds)} ({basis})" if seconds is not None else basis
        notify(f"{len(todo)} run(s) to train, {about}")
    total_cost = sum(cost(s) for s in todo)
    clock = {"start": time.perf_counter(), "done": 0.0, "started": 0}

    planned, started = len(todo), set()

    def on_start(spec: RunSpec) -> None:
        if spec.name in started:  # after waiting for another process that held it
            notify(f"{spec.name}: free again; reusing or resuming it")
            return
        started.add(spec.name)
        clock["started"] += 1
        notify(f"[{clock['started']}/{planned}] {spec.name}: {spec.recipe.steps} steps{_eta(clock, total_cost)}")

    locked: list[RunSpec] = []  # runs another process is training: waited for, then reused

    def on_done(spec: RunSpec, outcome) -> None:
        if isinstance(outcome, RunLockedError):
            locked.append(spec)
            notify(f"{spec.name}: {outcome}; taken up again once it is free")
            return
        clock["done"] += cost(spec)
        if isinstance(outcome, RunInterrupted):  # a signal to its worker alone: resumable, not failed
            result.outcomes[spec.name] = f"{runs.INTERRUPTED} ({outcome})"
        elif isinstance(outcome, Exception):
            result.outcomes[spec.name] = f"failed ({type(outcome).__name__}: {outcome})"
        else:
            result.outcomes[spec.name] = outcome.state
        notify(f"{spec.name}: {result.outcomes[spec.name]}")

    if launcher is None:  # here: every run must fit (jobs of them at once) before the first starts
        for spec in todo:
            check_fits(spec, resolve_device(spec.device), runs_at_once=jobs)
    launcher = launcher or make_launcher(jobs, progress, callbacks, threads)
    if not wait:
        if not hasattr(launcher, "submit"):
            raise ConfigError("not waiting needs a launcher that submits jobs: --launcher slurm or submitit-local")
        result.submitted = launcher.submit(todo, runs_dir, on_start) if todo else []
        return result
    while todo:
        launcher.run(todo, runs_dir, on_start, on_done)
        todo, locked[:] = list(locked), []
        for spec in todo:  # the other process finishes it (reused) or stops (resumed here)
            RunLock(runs.run_dir_for(spec, runs_dir)).wait_free(notify)
    _report(result, [d for d in dirs if (d / runs.SPEC).exists()], out, formats, style, notify, report_options or {})
    return result


def _report(result: CompareResult, run_dirs: list[Path], out: Path, formats, style: str, notify,
            options: dict) -> None:
    """Build the report, one compare at a time: one that waited for another's report
    keeps it when no run has changed since (the report is written once)."""
    from gradlab.report import build_report

    lock = RunLock(out.parent, f".{out.name}.lock", doing="written")
    waited = lock.acquire_waiting(notify)
    try:
        if waited and _newer_than_runs(out / "report.md", run_dirs):
            notify(f"{out / 'report.md'} was written by another compare since these runs last changed; kept")
            result.report_dir = out
            return
        report = build_report(run_dirs, out, formats=formats, style=style, **options)
    finally:
        lock.release()
    result.report = report
    result.report_dir, result.report_warnings = report.out_dir, list(report.warnings)


def _newer_than_runs(report_md: Path, run_dirs: list[Path]) -> bool:
    if not report_md.exists():
        return False
    files = [f for d in run_dirs for f in (d / runs.STATUS, *run_tables.files(d / runs.METRICS))]
    changed = [f.stat().st_mtime for f in files if f.exists()]
    return report_md.stat().st_mtime >= max(changed, default=0.0)


def _state(run_dir: Path) -> str:
    """The run's state; a finished run whose tables are damaged counts as not finished (its
    trainer then says what is wrong)."""
    try:
        return runs.finished_intact(run_dir) or runs.read_status(run_dir).get("state", runs.PENDING)
    except Exception:
        return runs.PENDING


def _eta(clock: dict, total_cost: float) -> str:
    if clock["done"] <= 0 or total_cost <= 0:
        return ""
    elapsed = time.perf_counter() - clock["start"]
    left = elapsed / clock["done"] * (total_cost - clock["done"])
    return f" (about {_duration(left)} left in all)"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"
