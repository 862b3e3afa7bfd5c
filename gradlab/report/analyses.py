"""Analysis folders (gradlab.analysis_dirs) in reports: which module draws each kind.

Every kind has a figure module providing

    figure(analysis, style) -> matplotlib Figure      (drawn inside the style's theme)
    title(analysis) -> str
    caption(analysis) -> str
    sentences(analysis) -> list[str]                   (optional: the summary lines)
    TABLES = {table: (column, ...)}                    (optional: checked before drawing)

A folder that cannot be read, or lacks a table, column or rows its module needs, is a
warning, never a crash. Like the rest of the report, nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Iterable

from gradlab.analysis_dirs import Analysis, read_analysis
from gradlab.errors import ReportError, RunDirError
from gradlab.report import figures_init_gradients, figures_lesion, figures_shattering, figures_spp
from gradlab.report.files import DEFAULT_FORMATS, parse_formats, save_figure
from gradlab.report.inputs import find
from gradlab.report.style import get_style, theme

__all__ = ["FIGURE_MODULES", "AnalysisEntry", "analysis_sentences", "draw_analysis", "load_analyses", "load_entries"]

FIGURE_MODULES: dict[str, ModuleType] = {
    "probe-gradients": figures_init_gradients,
    "probe-spp": figures_spp,
    "probe-shattering": figures_shattering,
    "lesion": figures_lesion,
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
    module = FIGURE_MODULES.get(analysis.kind)
    if module is None:
        raise ReportError(f"analysis {path} ({analysis.kind}) skipped: this gradlab has no figure for that kind")
    _check_tables(analysis, module)
    sentences = module.sentences(analysis) if hasattr(module, "sentences") else []
    return AnalysisEntry(analysis, module, analysis.kind, module.title(analysis), module.caption(analysis),
                         list(sentences))  # fmt: skip


def load_analyses(paths) -> tuple[list[AnalysisEntry], list[str]]:
    """Every drawable analysis folder under `paths`, and one warning per folder left out."""
    return load_entries(find(paths)[1])


def load_entries(analysis_dirs: list[Path]) -> tuple[list[AnalysisEntry], list[str]]:
    """The drawable ones of these analysis folders, and one warning per folder left out.

    Entries get distinct figure names ("analysis_<folder>") for a report's figures/ folder.
    """
    entries: list[AnalysisEntry] = []
    warnings: list[str] = []
    used: set[str] = set()
    for path in analysis_dirs:
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
    folder and ReportError for a kind without a figure or a bad format/style.
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
