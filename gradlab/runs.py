"""The run directory: the only contract between training and reporting.

    <run>/spec.json        resolved run spec, model description, environment
    <run>/status.json      state, step, total_steps, message, divergence info
    <run>/metrics.parquet  one row per evaluation or rec.log call: step, named scalars
    <run>/layers.parquet   long format: step, layer, index, kind, stat, value
    <run>/checkpoint.pt    written and read by the trainer only

The two tables are append-only: while a run is live its rows are parts beside the file
(``layers.parts/``), compacted into it when a session ends (gradlab.run_tables, which
reads both alike). One module writes a run directory, for the trainer and for anyone's
loop: gradlab.run_writer. This module never imports torch: the report side
reads runs through it. Every write is atomic (gradlab.file_io).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from gradlab import run_tables
from gradlab.errors import RunDirError
from gradlab.families import keyed
from gradlab.file_io import read_json, write_json
from gradlab.run_lock import pid_alive

FORMAT_VERSION = 1

SPEC, STATUS, METRICS, LAYERS, CHECKPOINT = (
    "spec.json",
    "status.json",
    "metrics.parquet",
    "layers.parquet",
    "checkpoint.pt",
)
WATCH_SOURCE = "gradlab.watch"  # spec.json "source" of a run written from someone's own loop
TRAIN_SOURCE = "gradlab.train"  # ... and of one of gradlab's trainer (older runs have no "source")
SUBMITTED = "submitted.json"  # the job last submitted for the run (gradlab.launch), before and while it trains
_RUN_FILES = (STATUS, METRICS, "metrics.parts", LAYERS, "layers.parts", CHECKPOINT)  # named when spec.json is lost

# status.json "state" values
PENDING, RUNNING, DONE, DIVERGED, FAILED, INTERRUPTED = (
    "pending",
    "running",
    "done",
    "diverged",
    "failed",
    "interrupted",
)
FINISHED_STATES = (DONE, DIVERGED)

METRIC_COLUMNS = ["step", "epoch", "lr", "train_loss", "train_err", "test_err", "val_err", "images_per_s", "time_s"]
LAYER_COLUMNS = ["step", "layer", "index", "kind", "stat", "value"]


SPEC_FIELDS = {"name": str, "experiment": str, "seed": int, "model": dict, "run": dict, "data": dict,
               "recipe": dict, "env": dict, "format_version": int}
STATUS_FIELDS = {"state": str, "step": int, "total_steps": int, "message": str, "pid": int,
                 "diverged_step": int}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_status(run_dir: Path, state: str, step: int, total_steps: int, message: str = "", **extra) -> dict:
    status = {
        "state": state,
        "step": int(step),
        "total_steps": int(total_steps),
        "message": message,
        "updated": now_iso(),
        "pid": os.getpid(),
        **extra,
    }
    write_json(Path(run_dir) / STATUS, status)
    return status


def read_status(run_dir: Path) -> dict:
    """status.json of a run, checked (a run not yet started: pending at step 0)."""
    path = Path(run_dir) / STATUS
    return read_json(path, STATUS_FIELDS) if path.is_file() else {"state": PENDING, "step": 0}


def run_dir_for(spec, runs_dir: str | Path) -> Path:
    """Where a run lives: ``<runs_dir>/<experiment>/<run name>`` (``spec``: a gradlab.config.RunSpec)."""
    return Path(runs_dir) / spec.experiment / spec.name


def is_run_dir(path: Path) -> bool:
    return (Path(path) / SPEC).is_file()


@dataclass
class Run:
    """A run directory read from disk. Tolerates running and crashed runs."""

    path: Path
    spec: dict
    status: dict
    metrics: pd.DataFrame
    _layers: pd.DataFrame | None = field(default=None, repr=False)
    setting: str = field(default="", repr=False)  # what tells it from a report's other runs ("lr 0.1")

    @property
    def name(self) -> str:
        return self.spec.get("name", self.path.name)

    @property
    def state(self) -> str:
        """The status state, with a stale "running" told apart from a live one."""
        state = self.status.get("state", PENDING)
        if state == RUNNING and not pid_alive(self.status.get("pid")):
            return "crashed"
        return state

    @property
    def model(self) -> dict:
        """Model description written by the trainer: name, family, depth, params, probe_points."""
        return self.spec.get("model", {})

    @property
    def family(self) -> str:
        return self.model.get("family", "?")

    @property
    def family_key(self) -> str:
        """The family with the build options the run changed ("plain (no norm, sigmoid)") and,
        in a report, the ``setting`` that tells it from the other runs (gradlab.report.grouping):
        what the report groups and labels by, so that such runs are told apart."""
        return keyed(self.family, ", ".join(filter(None, (str(self.model.get("variant") or ""), self.setting))))

    @property
    def depth(self) -> int:
        return int(self.model.get("depth", 0))

    @property
    def layers(self) -> pd.DataFrame:
        """Per-layer statistics (long format); empty frame when none were recorded."""
        if self._layers is None:
            layers = run_tables.read(self.path / LAYERS)
            self._layers = layers if layers is not None else pd.DataFrame(columns=LAYER_COLUMNS)
        return self._layers

    @property
    def has_layers(self) -> bool:
        """Whether layer statistics were written (recording was on and has flushed)."""
        return run_tables.exists(self.path / LAYERS)

    def final(self, column: str) -> float:
        """Last non-missing value of a metrics column, NaN if none."""
        if column not in self.metrics or self.metrics[column].dropna().empty:
            return float("nan")
        return float(self.metrics[column].dropna().iloc[-1])


def finished_intact(run_dir: Path) -> str | None:
    """The state of a finished run whose tables read (None: not finished); RunDirError, with
    what to do, when one of its tables is damaged (a truncated file): such a run must not be
    taken as finished and reused."""
    state = read_status(run_dir).get("state")
    if state not in FINISHED_STATES:
        return None
    try:
        for table in (METRICS, LAYERS):
            run_tables.check(Path(run_dir) / table)
    except RunDirError as e:
        raise RunDirError(f"{e}; the run is marked {state} but its rows cannot be read: move {run_dir} aside "
                          "(or delete it) and rerun to train it again") from None  # fmt: skip
    return state


def diverged_note(nonfinite: dict) -> str:
    """status.json's words for a run whose recorded statistics went non-finite (``nonfinite``:
    the recorder's first sighting: step, layer, what)."""
    return f"statistics became non-finite at step {nonfinite['step']} (first: {nonfinite['what']} in {nonfinite['layer']})"


def lost_spec(path: Path) -> str | None:
    """What to say of a folder that holds a run's files (status.json, ...) but no spec.json:
    a run whose spec.json was deleted, never to be skipped without a word (None: not such)."""
    path = Path(path)
    if (path / SPEC).is_file() or not (path / STATUS).is_file():
        return None
    kept = ", ".join(f.name for f in sorted(path.iterdir()) if f.name in _RUN_FILES)
    return (f"{path} has lost its {SPEC} (it still holds {kept}); restore {SPEC} from a backup to read this "
            "run: gradlab leaves the folder untouched")  # fmt: skip


def read_run(path: Path) -> Run:
    """Read one run directory; raises RunDirError naming the damaged file."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory; pass a run directory (one holding {SPEC})")
    if not (path / SPEC).is_file():
        raise RunDirError(lost_spec(path) or f"{path} is not a run directory: it has no {SPEC}")
    spec = read_json(path / SPEC, SPEC_FIELDS)
    version = spec.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RunDirError(
            f"{path} was written by a newer gradlab (run format {version}, this gradlab reads up to "
            f"{FORMAT_VERSION}); upgrade gradlab with `pip install -U gradlab`"
        )
    status = read_status(path)
    metrics = run_tables.read(path / METRICS)
    if metrics is None:
        metrics = pd.DataFrame(columns=METRIC_COLUMNS)
    return Run(path=path, spec=spec, status=status, metrics=metrics)


def scan(path: Path, markers: tuple[str, ...] = (SPEC,)) -> dict[str, list[Path]]:
    """The folders that hold each marker file (spec.json, analysis.json, ...): ``path`` itself
    if it holds one, else every folder below it that does, found in one walk, sorted.
    RunDirError if ``path`` does not exist or is a file."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path} does not exist; pass a run directory or a folder of runs")
    found: dict[str, list[Path]] = {m: [] for m in markers}
    for marker in markers:
        if (path / marker).is_file():
            found[marker].append(path)
            return found
    if not path.is_dir():
        raise RunDirError(f"{path} is a file, not a run directory")
    for f in path.rglob("*"):
        if f.name in found and f.is_file():
            found[f.name].append(f.parent)
    return {m: sorted(dirs) for m, dirs in found.items()}


def found_run_dirs(found: dict[str, list[Path]]) -> list[Path]:
    """The run directories of a scan for (SPEC, STATUS, ...): those holding spec.json, and
    those that lost it but hold status.json, so that read_run says what is wrong with them
    instead of their disappearing from every listing."""
    return sorted(set(found[SPEC]) | set(found.get(STATUS, ())))


def find_run_dirs(paths) -> list[Path]:
    """Run directories under the given paths (each a run directory or a folder of them),
    with those that lost their spec.json (read_run names them)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return [d for p in paths for d in found_run_dirs(scan(p, (SPEC, STATUS)))]


def queued_run_dirs(paths) -> list[tuple[Path, dict]]:
    """Run directories whose submitted job has not started yet: a submitted.json (written by
    gradlab.launch when a SLURM or submitit-local job is submitted) and no spec.json, with the
    submission record. Whether the job still waits is the scheduler's to say (``squeue``)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found = []
    for p in map(Path, paths):
        candidates = [p / SUBMITTED] if (p / SUBMITTED).is_file() else sorted(p.rglob(SUBMITTED)) if p.is_dir() else []
        for f in candidates:
            if is_run_dir(f.parent):
                continue
            try:
                found.append((f.parent, read_json(f)))
            except RunDirError:
                found.append((f.parent, {}))
    return found


def load(paths, on_error: str = "raise") -> list[Run]:
    """Read every run under `paths`.

    on_error="raise": the first unreadable run is a RunDirError; "skip": unreadable runs
    are left out (load_all returns them with their problems).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    runs, problems = load_all(paths)
    if problems and on_error == "raise":
        raise RunDirError(problems[0][1])
    return runs


def load_all(paths) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Read every run under `paths`; unreadable ones come back as (path, message), those
    with a damaged layers table among them (a report still draws their metrics)."""
    runs: list[Run] = []
    problems: list[tuple[Path, str]] = []
    for d in find_run_dirs(paths):
        try:
            run = read_run(d)
            run_tables.check(d / LAYERS)  # read only when drawn: a damaged one is named here
            runs.append(run)
        except RunDirError as e:
            problems.append((d, str(e)))
    return runs, problems
