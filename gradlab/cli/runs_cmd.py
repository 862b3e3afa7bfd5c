"""`gradlab runs [RUNS_DIR]`: a table of run directories."""

from __future__ import annotations

import re

import click


@click.command()
@click.argument("runs_dir", type=click.Path(), default="runs")
def runs(runs_dir):
    """List the runs under RUNS_DIR (default: runs/) with status, step and final errors.

    Runs submitted to SLURM (or submitit-local) that have not started training are listed
    as submitted, with their job id: ask the scheduler (squeue, sacct) whether the job still
    waits or ended before the run began.

    \b
    Example:
      gradlab runs runs/
    """
    from gradlab import runs as rundirs

    found, problems = rundirs.load_all(runs_dir)
    queued = rundirs.queued_run_dirs(runs_dir)
    if not found and not problems and not queued:
        click.echo(f"no runs under {runs_dir}")
        return
    rows = [(f"{run.spec.get('experiment', '?')}/{run.name}", run) for run in found]
    rows.sort(key=lambda row: _natural(row[0]))
    waiting = [(f"{path.parent.name}/{path.name}", record) for path, record in queued]
    width = max([len(name) for name, _ in rows + waiting] + [len(str(p)) for p, _ in problems] + [3])
    header = f"{'run':<{width}} {'state':<11} {'step':>13} {'train err':>9} {'test err':>9}"
    click.echo(header)
    click.echo("-" * len(header))
    for name, run in rows:
        total = run.status.get("total_steps")  # 0: a loop of the user's own (gradlab.watch) plans none
        step = f"{run.status.get('step', 0)}" + (f"/{total}" if total else "")
        click.echo(f"{name:<{width}} {run.state:<11} {step:>13} {_pct(run.final('train_err')):>9} "
                   f"{_pct(run.final('test_err')):>9}")
    for name, record in waiting:  # a job was submitted; the run has not started
        job = f"{record.get('launcher', '?')} job {record.get('job_id', '?')}, submitted {record.get('submitted', '?')}"
        click.echo(f"{name:<{width}} {'submitted':<11} {'-':>13} {job}")
    for path, message in problems:
        click.echo(f"{str(path):<{width}} {'unreadable':<11} {message}")


def _natural(text: str) -> list:
    """Sort key that compares the numbers in a name as numbers: plain8 before plain14."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def _pct(x: float) -> str:
    return "-" if x != x else f"{x:.2%}"
