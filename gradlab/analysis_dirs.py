"""Analysis folders: what `gradlab analyze ...` and `gradlab lesion` write, read without torch.

    <dir>/analysis.json          kind, settings, creation time, environment
    <dir>/<table>.parquet        tidy (long-format) tables, named by each analysis
    <dir>/figures/<name>.<fmt>   the analysis' own figure(s), drawn by the command

Like a run directory (gradlab.runs), an analysis folder is the only contract between
the code that measures (torch) and the report that draws (pandas, matplotlib). Writes
are atomic; a folder that holds something else is never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gradlab import runs as R
from gradlab.errors import RunDirError
from gradlab.file_io import read_json, read_parquet, write_json, write_parquet
from gradlab.output_folders import check_output_folder

ANALYSIS = "analysis.json"
FORMAT_VERSION = 1
KINDS = ("probe-gradients", "probe-spp", "probe-shattering", "lesion")


@dataclass
class Analysis:
    """An analysis folder read from disk: its metadata and every table in it."""

    path: Path
    meta: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def settings(self) -> dict:
        return self.meta.get("settings", {})

    @property
    def name(self) -> str:
        return self.path.name


def is_analysis_dir(path: Path) -> bool:
    return (Path(path) / ANALYSIS).is_file()


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown analysis kind {kind!r}; known: {', '.join(KINDS)}")


def check_out_dir(out_dir: Path, kind: str) -> Path:
    """`out_dir` if an analysis of `kind` may be written there; a RunDirError otherwise.

    Allowed: a missing or empty folder, or one holding an earlier analysis of the same
    kind (it is replaced file by file). Refused: a file, a run directory, a folder with
    other contents, an analysis of another kind, or a place that is not writable.
    """
    _check_kind(kind)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"{out_dir} is a file; choose a folder for the results with --out")
    check_output_folder(out_dir, "--out", RunDirError)  # writable: refused before the work, not after
    if R.is_run_dir(out_dir):
        raise RunDirError(f"{out_dir} is a training run directory; it is left untouched: choose another --out")
    if is_analysis_dir(out_dir):
        old = read_json(out_dir / ANALYSIS).get("kind")
        if old != kind:
            raise RunDirError(f"{out_dir} holds a '{old}' analysis; it is left untouched: choose another --out")
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise RunDirError(f"{out_dir} is not empty and holds no gradlab analysis; it is left untouched: "
                          f"choose another --out")
    return out_dir


def write_analysis(out_dir: Path, kind: str, settings: dict, tables: dict[str, pd.DataFrame],
                   env: dict | None = None) -> Path:
    """Write tables (one Parquet file each) and analysis.json (last: it marks a complete folder)."""
    out_dir = check_out_dir(out_dir, kind)
    out_dir.mkdir(parents=True, exist_ok=True)
    old = out_dir / ANALYSIS
    if old.exists():  # rewriting: the folder reads as incomplete until the new analysis.json lands
        stale = set(read_json(old).get("tables", [])) - set(tables)
        old.unlink()
        for name in stale:
            (out_dir / f"{name}.parquet").unlink(missing_ok=True)
    for name, frame in tables.items():
        write_parquet(out_dir / f"{name}.parquet", frame)
    write_json(out_dir / ANALYSIS, {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "created": R.now_iso(),
        "settings": settings,
        "tables": sorted(tables),
        "env": env or {},
    })
    return out_dir


def read_analysis(path: Path) -> Analysis:
    """Read one analysis folder; raises RunDirError naming the damaged or missing file."""
    path = Path(path)
    if not is_analysis_dir(path):
        raise RunDirError(f"{path} is not an analysis folder: it has no {ANALYSIS}")
    meta = read_json(path / ANALYSIS)
    version = meta.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RunDirError(f"{path} was written by a newer gradlab (analysis format {version}); upgrade gradlab")
    if meta.get("kind") not in KINDS:
        raise RunDirError(f"{path / ANALYSIS} names an unknown analysis kind {meta.get('kind')!r}")
    tables = {}
    for name in meta.get("tables", []):
        table = path / f"{name}.parquet"
        if not table.is_file():
            raise RunDirError(f"{path} lacks {table.name}, which {ANALYSIS} lists; run the analysis again")
        tables[name] = read_parquet(table)
    return Analysis(path=path, meta=meta, tables=tables)
