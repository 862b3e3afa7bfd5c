"""Build a report folder from run directories: figures, tables, data and report.md.

    <out>/report.md                 runs, summary, figures (PNG links), table
    <out>/table.md, table.tex       Table 6 style (Markdown, LaTeX booktabs)
    <out>/figures/<name>.<fmt>      one file per figure and format
    <out>/data/*.csv                the tidy numbers behind the figures and table

Every file is written atomically; files in <out> that the report does not write are
left alone. A run that cannot be read is left out and named in the warnings and in
report.md; the report is built from the others.

Analysis folders (gradlab.analysis_dirs: `gradlab probe ...`, `gradlab lesion`) found
among the given paths are drawn too and listed under "## Analyses" (gradlab.report.
analyses); a report of analysis folders alone has just that section (and its problems).
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import re
import sys
import time
import warnings as _warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from gradlab import __version__
from gradlab import runs as R
from gradlab.analysis_dirs import find_analysis_dirs
from gradlab.errors import GradlabError, RunDirError
from gradlab.report import collect as C
from gradlab.report import summary as SUM
from gradlab.report import tables as T
from gradlab.report.figures_curves import curves_figure, finals_figure
from gradlab.report.figures_flow import flow_figure, heatmap_figure, heatmap_range
from gradlab.report.figures_response import responses_figure
from gradlab.report.style import depth_palette, get_style, theme

SUPPORTED_FORMATS = ("pdf", "png", "svg")
DEFAULT_FORMATS = ("pdf", "png")
CHILD_MIN_WAIT_S, CHILD_SLOWDOWN = 60.0, 5.0  # how long to wait for the drawing child


class ReportError(GradlabError):
    """A report that cannot be built: no readable runs, bad output folder, bad option."""


@dataclass
class ReportResult:
    out_dir: Path
    files: list[Path] = field(default_factory=list)  # every file written, report.md first
    warnings: list[str] = field(default_factory=list)  # unreadable runs and other problems
    summary: list[str] = field(default_factory=list)  # the sentences of report.md's summary
    table: pd.DataFrame | None = None  # the Table-6-style numbers, one row per model

    @property
    def report(self) -> Path:
        return self.out_dir / "report.md"


# ---------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """Formats from "pdf,png" or ("pdf", "png"); an unknown format is an error."""
    if isinstance(formats, str):
        formats = formats.split(",")
    out = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    bad = [f for f in out if f not in SUPPORTED_FORMATS]
    if bad or not out:
        raise ReportError(
            f"unknown figure format(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(SUPPORTED_FORMATS)}, "
            "comma-separated (e.g. --formats pdf,png)"
        )
    return out


def check_out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"--out {out_dir} is an existing file, not a folder; pass a folder path for the report")
    for parent in out_dir.parents:
        if parent.exists() and not parent.is_dir():
            raise ReportError(f"cannot create report folder {out_dir}: {parent} is a file")
    return out_dir


def default_out_dir(runs: list[R.Run], root: Path = Path("reports")) -> Path:
    """reports/<experiment> when every run shares one experiment, else reports/report."""
    names = {str(r.spec.get("experiment") or "") for r in runs}
    name = names.pop() if len(names) == 1 else ""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "report"
    return Path(root) / name


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------


def load_runs(run_paths) -> tuple[list[R.Run], list[str]]:
    """Every readable run under the paths (deduplicated), and one warning per problem."""
    if isinstance(run_paths, (str, Path)):
        run_paths = [run_paths]
    runs: list[R.Run] = []
    warnings: list[str] = []
    seen: set[Path] = set()
    for p in map(Path, run_paths):
        try:
            found, problems = R.load_all(p)
        except RunDirError as e:
            warnings.append(f"skipped {p}: {e}")
            continue
        if not found and not problems and not find_analysis_dirs(p):
            warnings.append(f"skipped {p}: no run directory found there (none holds {R.SPEC})")
        for path, message in problems:
            warnings.append(f"unreadable run {path}: {message}")
        for run in found:
            key = run.path.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(run)
    # runs with the same name (e.g. from two experiments) get distinct keys
    counts = Counter(r.name for r in runs)
    for run in runs:
        if counts[run.name] > 1:
            run.report_key = f"{run.spec.get('experiment') or run.path.parent.name}/{run.name}"
    keys = Counter(C.run_key(r) for r in runs)
    for run in runs:
        if keys[C.run_key(run)] > 1:
            run.report_key = str(run.path)
    return runs, warnings


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------


def _write_text(path: Path, text: str, files: list[Path]) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    R.atomic_write(path, write)
    files.append(path)


def _write_csv(path: Path, frame: pd.DataFrame, files: list[Path]) -> None:
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    _write_text(path, buf.getvalue(), files)


def save_figure(fig, out_dir: Path, name: str, formats, dpi: int, files: list[Path]) -> dict[str, Path]:
    saved = {}
    # lay the figure out once: the first save runs constrained layout, later saves reuse it
    for i, fmt in enumerate(formats):
        if i == 1:
            fig.set_layout_engine("none")
        path = out_dir / "figures" / f"{name}.{fmt}"
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        R.atomic_write(path, lambda tmp, f=fmt: fig.savefig(tmp, format=f, dpi=dpi, metadata=metadata))
        files.append(path)
        saved[fmt] = path
    return saved


@dataclass
class _Job:
    """One figure to draw: make(*args) returns a matplotlib Figure. weight: rough cost."""

    name: str
    title: str
    caption: str
    weight: float
    make: Callable
    args: tuple


def _render_jobs(jobs: list[_Job], out_dir: Path, formats, dpi: int) -> dict[str, dict[str, Path]]:
    return {j.name: save_figure(j.make(*j.args), out_dir, j.name, formats, dpi, []) for j in jobs}


def _fork_available() -> bool:
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


def _render(jobs: list[_Job], out_dir: Path, formats, dpi: int, workers: int | None) -> dict[str, dict[str, Path]]:
    """Draw and save every figure; with workers >= 2 a forked child draws part of them.

    Matplotlib drawing is single-threaded Python, and it is most of a report's time. A
    forked child inherits the data and the theme, so it starts at once; if it fails in
    any way its figures are drawn here instead, so errors surface with a traceback.
    """
    if workers is None:
        # not inside a training process (torch loaded, maybe CUDA and OpenMP pools): forking
        # those is legal but needless risk; `gradlab report` itself never loads torch
        workers = 1 if "torch" in sys.modules else min(2, os.cpu_count() or 1)
    if workers < 2 or len(jobs) < 2 or not _fork_available():
        return _render_jobs(jobs, out_dir, formats, dpi)
    # longest job first into the lighter of two bins
    mine, theirs, load = [], [], [0.0, 0.0]
    for j in sorted(jobs, key=lambda j: -j.weight):
        b = 0 if load[0] <= load[1] else 1
        (mine if b == 0 else theirs).append(j)
        load[b] += j.weight
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
        child = ctx.Process(target=_child, args=(send, theirs, out_dir, formats, dpi), daemon=True)
        child.start()
    send.close()
    start = time.perf_counter()
    try:
        done = _render_jobs(mine, out_dir, formats, dpi)
    except BaseException:
        child.kill()
        child.join()
        raise
    # the child has about as much to draw: a child far slower than that is stuck
    patience = max(CHILD_MIN_WAIT_S, CHILD_SLOWDOWN * (time.perf_counter() - start))
    result = None
    if recv.poll(patience):
        try:
            result = recv.recv()
        except (EOFError, OSError):
            result = None
    child.join(timeout=10)
    if child.is_alive():
        child.kill()
        child.join()
    if isinstance(result, dict) and set(result) == {j.name for j in theirs}:
        done.update(result)
    else:
        done.update(_render_jobs(theirs, out_dir, formats, dpi))
    return done


def _child(conn, jobs, out_dir, formats, dpi) -> None:
    try:
        conn.send(_render_jobs(jobs, out_dir, formats, dpi))
    except BaseException:
        conn.send(None)
    finally:
        conn.close()


@dataclass
class _Figure:
    name: str
    title: str
    caption: str
    paths: dict[str, Path]


def _embed(fig: _Figure, out_dir: Path) -> str:
    """Markdown for one figure: an image link to the PNG (or SVG), else links to the files."""
    lines = [f"### {fig.title}", ""]
    for fmt in ("png", "svg"):
        if fmt in fig.paths:
            lines.append(f"![{fig.title}]({fig.paths[fmt].relative_to(out_dir).as_posix()})")
            break
    else:
        lines.append(
            " · ".join(f"[{fmt.upper()}]({p.relative_to(out_dir).as_posix()})" for fmt, p in fig.paths.items())
        )
    lines += ["", f"*{fig.caption}*", ""]
    others = [f"[{fmt.upper()}]({p.relative_to(out_dir).as_posix()})" for fmt, p in fig.paths.items() if fmt != "png"]
    if others and "png" in fig.paths:
        lines += ["Also as " + ", ".join(others) + ".", ""]
    return "\n".join(lines)


def _md_cell(text) -> str:
    return str(text).replace("|", r"\|").replace("\n", " ")


def _runs_markdown(finals: pd.DataFrame, table: pd.DataFrame) -> str:
    t = table.set_index("run")
    lines = ["| run | model | seed | state | step | train err (%) | test err (%) |", "|:--|:--|--:|:--|--:|--:|--:|"]
    for f in finals.itertuples(index=False):
        row = t.loc[f.run]
        state = f.note or f.state
        step = f"{row['step']:,}" + (f" / {row['total_steps']:,}" if row["total_steps"] else "")
        tr = "–" if pd.isna(f.train_err) else f"{100 * f.train_err:.2f}"
        te = "–" if pd.isna(f.test_err) else f"{100 * f.test_err:.2f}"
        lines.append(f"| `{_md_cell(f.run)}` | {f.label} | {f.seed} | {_md_cell(state)} | {step} | {tr} | {te} |")
    return "\n".join(lines) + "\n"


def _context_line(runs: list[R.Run]) -> str:
    def values(get):
        return sorted({str(v) for v in map(get, runs) if v not in (None, "")})

    experiments = values(lambda r: r.spec.get("experiment"))
    data = values(lambda r: (r.spec.get("data") or {}).get("name"))
    steps = values(lambda r: (r.spec.get("recipe") or {}).get("steps"))
    batch = values(lambda r: (r.spec.get("recipe") or {}).get("batch_size"))
    lr = values(lambda r: (r.spec.get("recipe") or {}).get("lr"))
    parts = [f"{len(runs)} run{'s' if len(runs) != 1 else ''}"]
    if experiments:
        parts.append(f"experiment {', '.join(experiments)}")
    if data:
        parts.append(f"data {', '.join(data)}")
    recipe = []
    if steps:
        recipe.append(f"{'/'.join(steps)} steps")
    if batch:
        recipe.append(f"batch {'/'.join(batch)}")
    if lr:
        recipe.append(f"lr {'/'.join(lr)}")
    if recipe:
        parts.append(", ".join(recipe))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "; ".join(parts) + f". Generated by gradlab {__version__} on {when}."


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------


def build_report(
    run_paths,
    out_dir: Path | str | None = None,
    formats: str | Iterable[str] = DEFAULT_FORMATS,
    style: str = "paper",
    workers: int | None = None,
) -> ReportResult:
    """Read the runs under `run_paths` and write a report folder; see the module docstring.

    out_dir=None: reports/<experiment> (see default_out_dir). Raises ReportError when no
    run and no analysis folder can be read or out_dir is a file; a damaged run or analysis
    folder only adds a warning.
    workers: processes drawing figures (None: 2 where fork is available and torch is not
    loaded, else 1).
    """
    formats = parse_formats(formats)
    look = get_style(style)
    if out_dir is not None:
        out_dir = check_out_dir(Path(out_dir))
    from gradlab.report import analyses as A  # it imports this module

    runs, warnings = load_runs(run_paths)
    entries, analysis_warnings = A.load_analyses(run_paths)
    warnings += analysis_warnings
    if not runs and not entries:
        detail = "; ".join(warnings) if warnings else "no run directories given"
        raise ReportError(f"no readable runs to report on ({detail})")
    out_dir = check_out_dir(default_out_dir(runs) if out_dir is None else out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    analysis_jobs = [_Job(e.name, e.title, e.caption, 1.2, e.figure, (look,)) for e in entries]
    if not runs:
        return _analyses_only_report(entries, analysis_jobs, out_dir, formats, look, workers, warnings)
    experiments = sorted({str(r.spec.get("experiment") or "?") for r in runs})
    if len(experiments) > 1:
        warnings.append(f"runs come from {len(experiments)} experiments ({', '.join(experiments)}); drawn together")

    table = C.run_table(runs)
    notes = C.model_notes(table)
    curves = C.curves(runs)
    finals = C.finals(runs)
    models = C.by_model(finals, table)
    palette = depth_palette(table["depth"])
    layer_data = C.load_layer_data(runs)
    for key, reason in layer_data.missing.items():
        if "damaged" in reason or "lacks" in reason:
            warnings.append(f"layer statistics of {key} skipped: {reason}")
    flow = C.gradient_flow(runs, layer_data)
    flow_models = C.flow_by_model(flow)
    responses = C.responses(runs, layer_data)
    phase_labels = {p: C.phase_step_label(flow, p) for p in C.PHASES}

    files: list[Path] = []
    skipped: list[str] = []
    jobs: list[_Job] = []

    def job(name, title, caption, weight, make, *args):
        jobs.append(_Job(name, title, caption, weight, make, args))

    if not curves.empty:
        job("curves", "Training curves (Fig. 6 style)",
            "Dashed lines: training error; bold lines: test error. Left: plain nets; right: ResNets. "
            "With several seeds, the mean over seeds (shaded: test-error min–max).",
            1.0, curves_figure, curves, palette, notes, look)  # fmt: skip
    else:
        skipped.append("training curves: no run has evaluated yet")
    if models["train_mean"].notna().any():
        job("final_error", "Final error vs depth",
            "Final training and test error against depth. Open circles, dashed: plain; filled squares, solid: "
            "ResNet; ×: a run did not finish. Errorbars: std over seeds (when several).",
            0.8, finals_figure, models, palette, look, notes)  # fmt: skip
    for phase in C.PHASES:
        if flow_models.empty or not (flow_models["phase"] == phase).any():
            continue
        job(f"gradient_flow_{phase}", f"Gradient flow, {phase} ({phase_labels[phase]})",
            "Per-layer gradient norms along depth (layer 1 = first conv, last = classifier), log scale. "
            "Top: ‖∂L/∂W‖ of each main-path conv/fc weight; bottom: ‖∂L/∂h‖ at each conv output. "
            "Geometric mean over seeds.",
            1.5, flow_figure, flow_models, phase, phase_labels[phase], palette, notes, look)  # fmt: skip
    maps = []
    by_key = {C.run_key(r): r for r in runs}
    for row in table.to_dict("records"):
        frame = layer_data.frames.get(row["run"])
        if frame is not None:
            m = C.gradient_heatmap(by_key[row["run"]], frame)
            if not m.empty:
                maps.append((row, m))
    seeds = sorted({int(row["seed"]) for row, _ in maps})
    value_range = heatmap_range(maps)
    for seed in seeds:  # one grid (depth × family) per seed keeps panels readable
        these = [(row, m) for row, m in maps if int(row["seed"]) == seed]
        name, title = ("gradient_heatmap", "") if len(seeds) == 1 else (f"gradient_heatmap_seed{seed}", f"seed {seed}")
        job(name, "Gradient norm by layer and step" + (f", {title}" if title else ""),
            "‖∂L/∂W‖ of each main-path weight (y: layer, input at the bottom) at each recorded step "
            "(x, in recording order; the schedule is denser early). One log colour scale for all runs"
            f"{' and seeds' if len(seeds) > 1 else ''}; grey: non-finite.",
            2.0, heatmap_figure, these, look, value_range, title)  # fmt: skip
    if not responses.empty:
        job("layer_responses", "Layer responses (Fig. 7 style)",
            "Std of each BN output (after BN, before ReLU) at the last recorded step. Top: layers in their "
            "original order; bottom: sorted by magnitude. Mean over seeds. Log y axis when the stds span "
            "more than two decades.",
            1.2, responses_figure, responses, palette, notes, look)  # fmt: skip
    with theme(look):
        saved = _render(jobs + analysis_jobs, out_dir, formats, look.dpi, workers)
    figures = [_Figure(j.name, j.title, j.caption, saved[j.name]) for j in jobs]
    analysis_figures = [_Figure(j.name, j.title, j.caption, saved[j.name]) for j in analysis_jobs]
    for fig in figures + analysis_figures:
        files.extend(fig.paths.values())
    if not layer_data:
        skipped.append("gradient flow, gradient heatmap and layer responses: no run has layer statistics")
        warnings.append("no layer statistics in any run: gradient-flow, heatmap and response figures skipped")

    _write_text(out_dir / "table.md", T.to_markdown(models), files)
    _write_text(out_dir / "table.tex", T.to_latex(models), files)
    _write_csv(out_dir / "data" / "runs.csv", finals, files)
    _write_csv(out_dir / "data" / "final_by_model.csv", models, files)
    _write_csv(out_dir / "data" / "curves.csv", curves, files)
    if not flow.empty:
        _write_csv(out_dir / "data" / "gradient_flow.csv", flow, files)
    if not responses.empty:
        _write_csv(out_dir / "data" / "layer_responses.csv", responses, files)

    sentences = SUM.summarize(models, flow_models, responses, phase_labels)
    md = _report_markdown(runs, table, finals, models, figures, skipped, layer_data, warnings, sentences, out_dir)
    md += _analyses_markdown(entries, analysis_figures, out_dir)
    report = out_dir / "report.md"
    _write_text(report, md, files)
    files.insert(0, files.pop())
    summary = sentences + [s for e in entries for s in e.sentences]
    return ReportResult(out_dir=out_dir, files=files, warnings=warnings, summary=summary, table=models)


def _analyses_only_report(entries, jobs, out_dir: Path, formats, look, workers, warnings) -> ReportResult:
    """A report of analysis folders alone: their figures, captions and sentences."""
    with theme(look):
        saved = _render(jobs, out_dir, formats, look.dpi, workers)
    figures = [_Figure(j.name, j.title, j.caption, saved[j.name]) for j in jobs]
    files: list[Path] = [p for fig in figures for p in fig.paths.values()]
    sentences = [s for e in entries for s in e.sentences]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n = len(entries)
    lines = ["# Analysis report", "",
             f"{n} analysis folder{'s' if n != 1 else ''}, no training runs. Generated by gradlab {__version__} "
             f"on {when}.", ""]  # fmt: skip
    if warnings:
        lines += ["### Problems", ""] + [f"- {_md_cell(w)}" for w in warnings] + [""]
    md = "\n".join(lines) + _analyses_markdown(entries, figures, out_dir)
    _write_text(out_dir / "report.md", md, files)
    files.insert(0, files.pop())
    return ReportResult(out_dir=out_dir, files=files, warnings=warnings, summary=sentences, table=None)


def _analyses_markdown(entries, figures: list[_Figure], out_dir: Path) -> str:
    """The "## Analyses" section: per folder its figure, caption, sentences and source."""
    if not entries:
        return ""
    lines = ["", "## Analyses", ""]
    for entry, fig in zip(entries, figures):
        lines.append(_embed(fig, out_dir))
        lines += [f"- {_md_cell(s)}" for s in entry.sentences] + ([""] if entry.sentences else [])
        lines += [f"From `{_md_cell(entry.analysis.path)}` ({entry.analysis.kind}).", ""]
    return "\n".join(lines)


def _report_markdown(runs, table, finals, models, figures, skipped, layer_data, warnings, sentences, out_dir) -> str:
    experiments = sorted({str(r.spec.get("experiment") or "") for r in runs} - {""})
    title = f"Degradation report: {', '.join(experiments)}" if experiments else "Degradation report"
    lines = [f"# {title}", "", _context_line(runs), ""]
    lines += ["## Summary", ""] + [f"- {s}" for s in sentences] + [""]
    lines += ["## Runs", "", _runs_markdown(finals, table)]
    lines += [
        "Final errors: test error at the last evaluation, training error from that same evaluation.",
        "",
    ]
    if warnings:
        lines += ["### Problems", ""] + [f"- {_md_cell(w)}" for w in warnings] + [""]
    lines += ["## Figures", ""]
    for fig in figures:
        lines.append(_embed(fig, out_dir))
    if layer_data.missing:
        lines += [
            "Layer statistics missing for some runs (their gradient-flow, heatmap and response lines are absent):",
            "",
        ]
        lines += [f"- `{_md_cell(k)}`: {_md_cell(v)}" for k, v in layer_data.missing.items()] + [""]
    for s in skipped:
        lines += [f"Skipped: {s}.", ""]
    lines += ["## Table (Table 6 style)", "", T.to_markdown(models), "LaTeX (booktabs): [table.tex](table.tex)", ""]
    lines += ["Numbers behind the figures: [data/](data/) (CSV).", ""]
    return "\n".join(lines)
