"""Build a report folder from run directories: figures, tables, data and report.md.

    <out>/report.md                 runs, summary, figures (PNG links), table
    <out>/table.md, table.tex       Table 6 style (Markdown, LaTeX booktabs)
    <out>/figures/<name>.<fmt>      one file per figure and format
    <out>/data/*.csv                the tidy numbers behind the figures and table

Every file is written atomically; files in <out> that the report does not write are
left alone. A run that cannot be read is left out and named in the warnings and in
report.md; the report is built from the others.

Analysis folders (gradlab.analysis_dirs: `gradlab analyze ...`, `gradlab lesion`) found
among the given paths are drawn too and listed under "## Analyses" (gradlab.report.
analyses); a report of analysis folders alone has just that section (and its problems).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from gradlab import families as fam
from gradlab.errors import ReportError
from gradlab.report import analyses as A
from gradlab.report import collect as C
from gradlab.report import layer_frames as L
from gradlab.report import markdown as MD
from gradlab.report import summary as SUM
from gradlab.report import tables as T
from gradlab.report.figures_curves import curves_figure, finals_figure, scalars_figure
from gradlab.report.figures_flow import activation_figure, flow_figure, heatmap_figure, heatmap_range
from gradlab.report.figures_response import responses_figure
from gradlab.report.files import DEFAULT_FORMATS, check_out_dir, default_out_dir, parse_formats, write_csv, write_text
from gradlab.report.inputs import find, read_runs
from gradlab.report.markdown import DrawnFigure
from gradlab.report.render import FigureJob, render
from gradlab.report.style import depth_palette, get_style, theme

__all__ = ["ReportError", "ReportResult", "build_report"]


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
    run_dirs, analysis_dirs, warnings = find(run_paths)
    runs, run_warnings = read_runs(run_dirs)
    entries, analysis_warnings = A.load_entries(analysis_dirs)
    warnings += run_warnings + analysis_warnings
    if not runs and not entries:
        detail = "; ".join(warnings) if warnings else "no run directories given"
        raise ReportError(f"no readable runs to report on ({detail})")
    out_dir = check_out_dir(default_out_dir(runs) if out_dir is None else out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    analysis_jobs = [FigureJob(e.name, e.title, e.caption, 1.2, e.figure, (look,)) for e in entries]
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
    layer_data = L.load_layer_data(runs)
    for key, reason in layer_data.missing.items():
        if "damaged" in reason or "lacks" in reason:
            warnings.append(f"layer statistics of {key} skipped: {reason}")
    flow = L.gradient_flow(runs, layer_data)
    flow_models = L.flow_by_model(flow)
    responses = L.responses(runs, layer_data)
    acts = L.activations(runs, layer_data)
    acts_models = L.flow_by_model(acts)
    logged = C.scalars(runs)
    phase_labels = {p: L.phase_step_label(flow, p) for p in L.PHASES}

    files: list[Path] = []
    skipped: list[str] = []
    jobs: list[FigureJob] = []

    def job(name, title, caption, weight, make, *args):
        jobs.append(FigureJob(name, title, caption, weight, make, args))

    if not curves.empty:
        job("curves", "Training curves (Fig. 6 style)",
            "Dashed lines: training error; bold lines: test error. One panel per family (plain nets, ResNets, "
            "or a run's own name). With several seeds, the mean over seeds (shaded: test-error min–max).",
            1.0, curves_figure, curves, palette, notes, look)  # fmt: skip
    elif logged.empty:
        skipped.append("training curves: no run has evaluated yet")
    if not logged.empty:
        job("scalars", "Logged scalars",
            "What the runs of your own loop logged with rec.log, against the step: one panel per name, "
            "one line per run.",
            0.8, scalars_figure, logged, look)  # fmt: skip
    if models["train_mean"].notna().any():
        job("final_error", "Final error vs depth",
            "Final training and test error against depth. " + _family_marks(table)
            + "; ×: a run did not finish. Errorbars: std over seeds (when several).",
            0.8, finals_figure, models, palette, look, notes)  # fmt: skip
    for phase in L.PHASES:
        if flow_models.empty or not (flow_models["phase"] == phase).any():
            continue
        job(f"gradient_flow_{phase}", f"Gradient flow, {phase} ({phase_labels[phase]})",
            "Per-layer gradient norms along depth (layer 1 = first conv, last = classifier), log scale. "
            "Top: ‖∂L/∂W‖ of each main-path conv/fc weight (every weight matrix of other models); bottom: "
            "‖∂L/∂h‖ at each conv output (conv and linear outputs of other models). Geometric mean over seeds.",
            1.5, flow_figure, flow_models, phase, phase_labels[phase], palette, notes, look)  # fmt: skip
    maps = []
    by_key = {C.run_key(r): r for r in runs}
    for row in table.to_dict("records"):
        frame = layer_data.frames.get(row["run"])
        if frame is not None:
            m = L.gradient_heatmap(by_key[row["run"]], frame)
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
    if not acts_models.empty:
        job("activations", "Activations along depth",
            "Std of the output of each residual block (zoo nets) or of each watched layer (other models) along "
            "depth, at initialization, early in training and at its end (rows); log scale, geometric mean over "
            "seeds. Sampled on the first examples of a batch, except at BatchNorms.",
            1.2, activation_figure, acts_models, palette, notes, look)  # fmt: skip
    if not responses.empty:
        job("layer_responses", "Layer responses (Fig. 7 style)",
            "Std of each BN output (after BN, before ReLU) at the last recorded step. Top: layers in their "
            "original order; bottom: sorted by magnitude. Mean over seeds. Log y axis when the stds span "
            "more than two decades.",
            1.2, responses_figure, responses, palette, notes, look)  # fmt: skip
    with theme(look):
        saved = render(jobs + analysis_jobs, out_dir, formats, look.dpi, workers)
    figures = [DrawnFigure(j.name, j.title, j.caption, saved[j.name]) for j in jobs]
    analysis_figures = [DrawnFigure(j.name, j.title, j.caption, saved[j.name]) for j in analysis_jobs]
    for fig in figures + analysis_figures:
        files.extend(fig.paths.values())
    if not layer_data:
        skipped.append("gradient flow, gradient heatmap and layer responses: no run has layer statistics")
        warnings.append("no layer statistics in any run: gradient-flow, heatmap and response figures skipped")

    write_text(out_dir / "table.md", T.to_markdown(models), files)
    write_text(out_dir / "table.tex", T.to_latex(models), files)
    write_csv(out_dir / "data" / "runs.csv", finals, files)
    write_csv(out_dir / "data" / "final_by_model.csv", models, files)
    write_csv(out_dir / "data" / "curves.csv", curves, files)
    if not flow.empty:
        write_csv(out_dir / "data" / "gradient_flow.csv", flow, files)
    if not responses.empty:
        write_csv(out_dir / "data" / "layer_responses.csv", responses, files)
    if not acts.empty:
        write_csv(out_dir / "data" / "activations.csv", acts, files)
    if not logged.empty:
        write_csv(out_dir / "data" / "scalars.csv", logged, files)

    sentences = SUM.summarize(models, flow_models, responses, phase_labels, C.nonfinite(runs))
    md = MD.report(runs, table, finals, models, figures, skipped, layer_data, warnings, sentences, out_dir)
    md += MD.analyses(entries, analysis_figures, out_dir)
    write_text(out_dir / "report.md", md, files)
    files.insert(0, files.pop())
    summary = sentences + [s for e in entries for s in e.sentences]
    return ReportResult(out_dir=out_dir, files=files, warnings=warnings, summary=summary, table=models)


def _family_marks(table) -> str:
    """How the final-error figure tells families apart, for its caption."""
    families = set(table["family"])
    if families <= {fam.PLAIN, fam.RESNET}:
        return "Open circles, dashed: plain; filled squares, solid: ResNet"
    text = "One marker and line style per family (legend), one colour per depth"
    return text + ("; a depth's markers side by side" if len(families) > 2 else "")


def _analyses_only_report(entries, jobs, out_dir: Path, formats, look, workers, warnings) -> ReportResult:
    """A report of analysis folders alone: their figures, captions and sentences."""
    with theme(look):
        saved = render(jobs, out_dir, formats, look.dpi, workers)
    figures = [DrawnFigure(j.name, j.title, j.caption, saved[j.name]) for j in jobs]
    files: list[Path] = [p for fig in figures for p in fig.paths.values()]
    sentences = [s for e in entries for s in e.sentences]
    write_text(out_dir / "report.md", MD.analyses_only(entries, figures, warnings, out_dir), files)
    files.insert(0, files.pop())
    return ReportResult(out_dir=out_dir, files=files, warnings=warnings, summary=sentences, table=None)
