"""Analysis folders (gradlab.analysis_dirs) in reports: which module draws each kind.

Every kind has a figure module providing

    figure(analysis, style) -> matplotlib Figure      (drawn inside the style's theme)
    title(analysis) -> str
    caption(analysis) -> str
    sentences(analysis) -> list[str]                   (optional: the summary lines)
    TABLES = {table: (column, ...)}                    (optional: checked before drawing)

A kind whose module is not installed yet is skipped with a warning; a folder that cannot
be read, or lacks a table, column or rows its module needs, is a warning too, never a crash.
Like the rest of the report, nothing here imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Iterable

from gradlab.analysis_dirs import Analysis, find_analysis_dirs, read_analysis
from gradlab.errors import RunDirError
from gradlab.report.build import DEFAULT_FORMATS, ReportError, save_figure, parse_formats
from gradlab.report.style import get_style, theme

__all__ = ["FIGURE_MODULES", "AnalysisEntry", "analysis_sentences", "draw_analysis", "figure_module", "load_analyses"]

FIGURE_MODULES = {
    "probe-gradients": "gradlab.report.figures_init_gradients",
    "probe-spp": "gradlab.report.figures_spp",
    "probe-shattering": "gradlab.report.figures_shattering",
    "lesion": "gradlab.report.figures_lesion",
}


@dataclass
class AnalysisEntry:
    """One analysis folder ready to draw: its data, figure module and texts."""

    analysis: Analysis
    module: ModuleType
    name: str  # figure file stem in a report
    title: str
    caption: str
    sentences: list[str] = field(default_factory=list)

    def figure(self, style):
        return self.module.figure(self.analysis, style)


def figure_module(kind: str) -> ModuleType | None:
    """The module drawing `kind`, or None when it is not (yet) part of this gradlab."""
    name = FIGURE_MODULES.get(kind)
    if name is None or importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def _check_tables(analysis: Analysis, module: ModuleType) -> None:
    for table, columns in getattr(module, "TABLES", {}).items():
        frame = analysis.tables.get(table)
        if frame is None:
            raise RunDirError(f"{analysis.path} has no '{table}' table; run the analysis again")
        where = analysis.path / f"{table}.parquet"
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise RunDirError(f"{where} lacks column(s) {', '.join(missing)}; run the analysis again")
        if frame.empty:
            raise RunDirError(f"{where} has no rows; run the analysis again")


def _entry(path: Path) -> AnalysisEntry:
    """Read and check one folder; RunDirError if it is damaged, ReportError if undrawable."""
    analysis = read_analysis(path)
    module = figure_module(analysis.kind)
    if module is None:
        raise ReportError(f"analysis {path} ({analysis.kind}) skipped: this gradlab has no figure for that kind "
                          f"yet ({FIGURE_MODULES[analysis.kind]} is missing)")  # fmt: skip
    _check_tables(analysis, module)
    sentences = module.sentences(analysis) if hasattr(module, "sentences") else []
    return AnalysisEntry(analysis, module, analysis.kind, module.title(analysis), module.caption(analysis),
                         list(sentences))  # fmt: skip


def load_analyses(paths) -> tuple[list[AnalysisEntry], list[str]]:
    """Every drawable analysis folder under `paths`, and one warning per folder left out.

    Entries get distinct figure names ("analysis_<folder>") for a report's figures/ folder.
    """
    entries: list[AnalysisEntry] = []
    warnings: list[str] = []
    used: set[str] = set()
    for path in find_analysis_dirs(paths):
        try:
            entry = _entry(path)
        except RunDirError as e:
            warnings.append(f"unreadable analysis {path}: {e}")
            continue
        except ReportError as e:
            warnings.append(str(e))
            continue
        stem = "analysis_" + (re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-.") or entry.analysis.kind)
        name, k = stem, 2
        while name in used:
            name, k = f"{stem}-{k}", k + 1
        used.add(name)
        entry.name = name
        entries.append(entry)
    return entries, warnings


def draw_analysis(analysis_dir: Path | str, formats: str | Iterable[str] = DEFAULT_FORMATS,
                  style: str = "paper") -> list[Path]:  # fmt: skip
    """Draw an analysis folder's own figure into <dir>/figures/<kind>.<fmt>; the files written.

    Called by the commands that write analysis folders. Raises RunDirError for a damaged
    folder and ReportError for a kind without a figure module or a bad format/style.
    """
    formats = parse_formats(formats)
    look = get_style(style)
    entry = _entry(Path(analysis_dir))
    files: list[Path] = []
    with theme(look):
        fig = entry.figure(look)
        save_figure(fig, Path(analysis_dir), entry.name, formats, look.dpi, files)
    return files


def analysis_sentences(analysis_dir: Path | str) -> list[str]:
    """The summary sentences of one analysis folder (what its command prints when done)."""
    return _entry(Path(analysis_dir)).sentences
