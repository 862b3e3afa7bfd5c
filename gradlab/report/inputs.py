"""What a report is built from: the run directories and analysis folders under the paths
it is given, found in one walk of each path and read through their contracts
(gradlab.runs, gradlab.analysis_dirs). A run or folder that cannot be read becomes a
warning, never an error."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from gradlab import runs as R
from gradlab.analysis_dirs import ANALYSIS
from gradlab.errors import RunDirError
from gradlab.report.collect import run_key


def find(paths) -> tuple[list[Path], list[Path], list[str]]:
    """Run directories and analysis folders under ``paths`` (each one of them, or a folder
    holding some), each path walked once; and a warning per path that holds neither."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    run_dirs: list[Path] = []
    analysis_dirs: list[Path] = []
    warnings: list[str] = []
    for p in paths:
        try:
            found = R.scan(p, (R.SPEC, ANALYSIS, R.STATUS))
        except RunDirError as e:
            warnings.append(f"skipped {p}: {e}")
            continue
        run_dirs += R.found_run_dirs(found)
        analysis_dirs += found[ANALYSIS]
        if not found[R.SPEC] and not found[ANALYSIS] and not found[R.STATUS]:
            warnings.append(f"skipped {p}: no run directory found there (none holds {R.SPEC})")
    return run_dirs, list(dict.fromkeys(analysis_dirs)), warnings


def read_runs(run_dirs: list[Path]) -> tuple[list[R.Run], list[str]]:
    """Every readable run (deduplicated), each with a distinct ``report_key``, and one
    warning per unreadable one."""
    runs: list[R.Run] = []
    warnings: list[str] = []
    seen: set[Path] = set()
    for path in run_dirs:
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            runs.append(R.read_run(path))
        except RunDirError as e:
            warnings.append(f"unreadable run {path}: {e}")
    # runs with the same name (e.g. from two experiments) get distinct keys
    counts = Counter(r.name for r in runs)
    for run in runs:
        if counts[run.name] > 1:
            run.report_key = f"{run.spec.get('experiment') or run.path.parent.name}/{run.name}"
    keys = Counter(run_key(r) for r in runs)
    for run in runs:
        if keys[run_key(run)] > 1:
            run.report_key = str(run.path)
    return runs, warnings


def experiments_warning(runs) -> str | None:
    """The warning that trainer runs of several experiments (recipes chosen apart, a
    different preset or flags) are drawn together; None when they come from one. Runs of
    someone's own loop (gradlab.watch, the callbacks) are left out: they are labelled by
    their own names, and their folder says nothing of a recipe."""
    trained = [r for r in runs if r.spec.get("source") != R.WATCH_SOURCE]
    experiments = sorted({str(r.spec.get("experiment") or "?") for r in trained})
    if len(experiments) < 2:
        return None
    return f"runs come from {len(experiments)} experiments ({', '.join(experiments)}); drawn together"

