"""Build a report folder from run directories: figures, tables, data and report.md.

    <out>/report.md                 findings, summary, runs, figures (PNG links), table
    <out>/table.md, table.tex       Table 6 style (Markdown, LaTeX booktabs)
    <out>/figures/<name>.<fmt>      one file per figure and format
    <out>/data/*.csv                the tidy numbers behind the figures and table
    <out>/data/findings.csv, .json  the findings (gradlab.findings), one row per finding

report.md starts with the findings of the runs (the rules of `gradlab check`, with the
thresholds of ``findings_settings``), grouped by severity, each linked to the figure file
that shows it (gradlab.report.markdown.findings_section).

The report is built in a folder beside <out> and swapped in whole at the end
(gradlab.report.staging.staged_folder): a report stopped or killed half-way leaves <out> as it
was, and the next report removes what it left. Files in <out> that the report does not write
are carried into the new folder. A run that cannot be read is left out and named in the warnings and in
report.md; the report is built from the others.

Analysis folders (gradlab.analysis_dirs: `gradlab analyze ...`, `gradlab lesion`) found
among the given paths are drawn too and listed under "## Analyses" (gradlab.report.
analyses); a report of analysis folders alone has just that section (and its problems).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable

import pandas as pd

from gradlab.errors import ReportError, RunDirError
from gradlab.findings import Finding, Settings, check_runs, default_settings
from gradlab.report import analyses as A
from gradlab.report import collect as C
from gradlab.report import layer_frames as L
from gradlab.report import markdown as MD
from gradlab.report import recipes as RC
from gradlab.report import selection as S
from gradlab.report import summary as SUM
from gradlab.report import tables as T
from gradlab.report.figure_jobs import figure_jobs, own_families
from gradlab.report.files import DEFAULT_FORMATS, check_out_dir, default_out_dir, parse_formats, write_csv, write_text
from gradlab.report.inputs import experiments_warning, find, read_runs
from gradlab.report.markdown import DrawnFigure
from gradlab.report.render import FigureJob, render
from gradlab.report.staging import staged_folder
from gradlab.report.style import depth_palette, get_style, theme

__all__ = ["ReportError", "ReportResult", "build_report"]

FINDINGS_CSV = ["severity", "rule", "run", "layers", "positions", "first_step", "last_step", "when", "summary",
                "evidence", "explanation", "suggestion", "figure", "figure_file"]  # fmt: skip


@dataclass
class ReportResult:
    out_dir: Path
    files: list[Path] = field(default_factory=list)  # every file written, report.md first
    warnings: list[str] = field(default_factory=list)  # unreadable runs and other problems
    summary: list[str] = field(default_factory=list)  # the sentences of report.md's summary
    findings: list[Finding] = field(default_factory=list)  # report.md's first section, most severe first
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
    findings_settings: Settings | None = None,
    select: tuple[str, ...] = (),
    select_on: str = "val",
) -> ReportResult:
    """Read the runs under `run_paths` and write a report folder; see the module docstring.

    out_dir=None: reports/<experiment> (see default_out_dir). Raises ReportError when no
    run and no analysis folder can be read or out_dir is a file; a damaged run or analysis
    folder only adds a warning.
    workers: processes drawing figures (None: 2 where fork is available and torch is not
    loaded, else 1).
    findings_settings: the rules' thresholds (gradlab.findings.Settings; None: the defaults).
    select: a swept recipe key (("lr",)) to choose per model on validation error; the table,
    figures and findings then show each model at its chosen value (gradlab.report.recipes).
    select_on: "val"; "test" is refused (a ConfigError).
    """
    S.check_request(select, select_on)
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
    analysis_jobs = [FigureJob(e.name, e.title, e.caption, 1.2, e.figure, (look,)) for e in entries]
    inputs = [Path(p) for p in ([run_paths] if isinstance(run_paths, (str, Path)) else run_paths)]
    with staged_folder(out_dir, inputs + run_dirs + analysis_dirs) as stage:
        warnings += stage.warnings
        if runs:
            settings = findings_settings or default_settings()
            recipes = RC.prepare(runs, select, select_on)
            result = _runs_report(recipes, entries, analysis_jobs, stage.path, formats, look, workers, warnings,
                                  settings)
        else:
            result = _analyses_only_report(entries, analysis_jobs, stage.path, formats, look, workers, warnings)
    result.files = [out_dir / p.relative_to(stage.path) for p in result.files]
    result.out_dir = out_dir
    return result


def _runs_report(recipes: RC.Recipes, entries, analysis_jobs, out_dir: Path, formats, look, workers, warnings,
                 settings: Settings) -> ReportResult:
    """The report of the runs ``recipes`` shows (and analysis folders' ``entries``), written into ``out_dir``."""
    runs = recipes.shown
    mixed = experiments_warning(runs)
    if mixed:
        warnings.append(mixed)
    f = _frames(runs, warnings)
    f.models = RC.chosen_column(f.models, recipes)
    files: list[Path] = []
    skipped: list[str] = []
    jobs = RC.sensitivity_jobs(recipes, look) + [RC.at_chosen(j, recipes) for j in figure_jobs(f, look, skipped, own_families(runs))]
    with theme(look):
        saved = render(jobs + analysis_jobs, out_dir, formats, look.dpi, workers)
    figures = [DrawnFigure(j.name, j.title, j.caption, saved[j.name]) for j in jobs]
    analysis_figures = [DrawnFigure(j.name, j.title, j.caption, saved[j.name]) for j in analysis_jobs]
    for fig in figures + analysis_figures:
        files.extend(fig.paths.values())
    if not f.layer_data:
        readable = "readable " if any(map(_unreadable, f.layer_data.missing.values())) else ""
        skipped.append(f"gradient flow, gradient heatmap and layer responses: no run has {readable}layer statistics")
        warnings.append(f"no {readable}layer statistics in any run: gradient-flow, heatmap and response figures skipped")
    _write_data(f, out_dir, files)
    sens_figures = {fig.name: fig for fig in figures if fig.name.startswith("sensitivity_")}
    figures = [fig for fig in figures if fig.name not in sens_figures]
    sensitivity_md = RC.write_sensitivity(recipes, sens_figures, out_dir, files)
    findings, unchecked = _findings(runs, settings, warnings)
    shown = [_finding_figure(x, figures, f.flow) for x in findings]
    _write_findings(findings, shown, out_dir, files)
    sentences = RC.selection_sentences(f.models, recipes)
    sentences += SUM.summarize(f.models, f.flow_models, f.responses, f.phase_labels, C.nonfinite(runs))
    head = MD.findings_section(findings, shown, _rules_in_force(settings), len(runs), out_dir, unchecked)
    md = MD.report(runs, f.table, f.finals, f.models, figures, skipped, f.layer_data, warnings, sentences, out_dir,
                   head)  # fmt: skip
    md += sensitivity_md + MD.analyses(entries, analysis_figures, out_dir)
    write_text(out_dir / "report.md", md, files)
    files.insert(0, files.pop())
    summary = sentences + [s for e in entries for s in e.sentences]
    return ReportResult(out_dir=out_dir, files=files, warnings=warnings, summary=summary, table=f.models,
                        findings=findings)  # fmt: skip


def _findings(runs, settings: Settings, warnings: list[str]) -> tuple[list[Finding], dict[str, str]]:
    """check_runs on the runs taken together (a rule may compare them), each named by its
    report key, sorted as `gradlab check` sorts them; and the runs left out, with why: a run
    whose layer statistics cannot be read (a warning too). A run without layer statistics is
    checked on what it has (its loss, its final errors)."""
    checked, unchecked = [], {}
    for run in runs:
        try:
            run.layers
        except RunDirError as e:
            unchecked[C.run_key(run)] = "its layer statistics cannot be read"
            warnings.append(f"findings of {C.run_key(run)} skipped: {e}")
            continue
        checked.append(run)
    return check_runs(checked, settings, keys={r.path: C.run_key(r) for r in checked}), unchecked


def _rules_in_force(settings: Settings) -> MD.RulesInForce:
    """Which rules ran, which were off, and the thresholds that differ from their defaults."""
    changed = [f"{name}.{key}={value:g}" for name, rule in settings.rules.items() if settings.enabled(name)
               for key, value in settings[name].items() if value != rule.thresholds[key].default]  # fmt: skip
    on = [name for name in settings.rules if settings.enabled(name)]
    return MD.RulesInForce(on, sorted(set(settings.rules) - set(on)), changed)


def _finding_figure(finding: Finding, figures: list[MD.DrawnFigure], flow: pd.DataFrame) -> MD.FindingFigure:
    """The drawn figure that shows ``finding``: its figure stem, else the figures of that stem
    (gradient_flow_<phase>: the phase whose step of the finding's run is nearest its worst or
    first step), else the logged scalars for "curves" (a run of someone's loop logs a loss
    but no errors); or why none was drawn."""
    if finding.figure is None:
        return MD.FindingFigure(None, "no figure shows it")
    drawn = {fig.name: fig for fig in figures}
    if finding.figure in drawn:
        return MD.FindingFigure(drawn[finding.figure])
    phases = {f"{finding.figure}_{p}": p for p in L.PHASES if f"{finding.figure}_{p}" in drawn}
    if phases:
        rows = flow[flow["run"] == finding.run].groupby("phase")["step"].max()
        step = finding.extra.get("worst_step", finding.first_step)
        at = {name: rows[p] for name, p in phases.items() if p in rows.index}
        if at and step is not None:
            return MD.FindingFigure(drawn[min(at, key=lambda name: abs(int(at[name]) - int(step)))])
        return MD.FindingFigure(drawn[next(iter(phases))])
    if finding.figure == "curves" and "scalars" in drawn:
        return MD.FindingFigure(drawn["scalars"])
    return MD.FindingFigure(None, f"this report has no {finding.figure.replace('_', ' ')} figure")


def _write_findings(findings: list[Finding], shown: list[MD.FindingFigure], out_dir: Path, files: list[Path]):
    """data/findings.csv (one row per finding, its layers and positions ;-separated) and
    data/findings.json (each Finding.to_dict with the figure file that shows it)."""
    records, rows = [], []
    for x, fig in zip(findings, shown):
        link = fig.link(out_dir) or ""
        records.append({**x.to_dict(), "figure_file": link})
        rows.append({"severity": x.severity, "rule": x.rule, "run": x.run,
                     "layers": ";".join(p.layer for p in x.where), "positions": ";".join(str(p.position) for p in x.where),
                     "first_step": x.first_step, "last_step": x.last_step, "when": x.when, "summary": x.summary,
                     "evidence": x.evidence, "explanation": x.explanation, "suggestion": x.suggestion,
                     "figure": x.figure or "", "figure_file": link})  # fmt: skip
    table = pd.DataFrame(rows, columns=FINDINGS_CSV).astype({"first_step": "Int64", "last_step": "Int64"})
    write_csv(out_dir / "data" / "findings.csv", table, files)
    text = json.dumps(records, indent=2, ensure_ascii=False, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    write_text(out_dir / "data" / "findings.json", text + "\n", files)


def _unreadable(reason: str) -> bool:
    """Whether a run's layer statistics are missing because its file could not be read
    (not because the run recorded none)."""
    return "damaged" in reason or "lacks" in reason


def _frames(runs, warnings: list[str]) -> SimpleNamespace:
    """Every frame the figures, tables and text of a runs report draw from."""
    f = SimpleNamespace(table=C.run_table(runs), curves=C.curves(runs), finals=C.finals(runs), logged=C.scalars(runs))
    f.notes = C.model_notes(f.table)
    f.models = C.by_model(f.finals, f.table)
    f.palette = depth_palette(f.table["depth"])
    f.layer_data = L.load_layer_data(runs)
    for key, reason in f.layer_data.missing.items():
        if _unreadable(reason):
            warnings.append(f"layer statistics of {key} skipped: {reason}")
    f.flow = L.gradient_flow(runs, f.layer_data)
    f.flow_models = L.flow_by_model(f.flow)
    f.responses = L.responses(runs, f.layer_data)
    f.acts = L.activations(runs, f.layer_data)
    f.acts_models = L.flow_by_model(f.acts)
    f.phase_labels = {p: L.phase_step_label(f.flow, p) for p in L.PHASES}
    f.heatmaps = _heatmap_panels(f.models, L.model_heatmaps(runs, f.layer_data))
    return f


def _heatmap_panels(models: pd.DataFrame, maps: dict) -> list[tuple[dict, pd.DataFrame]]:
    """(the model's row of by_model, its seeds-pooled layer × step frame), in table order."""
    keyed = [((row["family"], int(row["depth"])), row) for row in models.to_dict("records")]
    return [(row, maps[key]) for key, row in keyed if key in maps]


def _write_data(f: SimpleNamespace, out_dir: Path, files: list[Path]) -> None:
    """The tables (Markdown, LaTeX) and the CSVs behind the figures."""
    write_text(out_dir / "table.md", T.to_markdown(f.models), files)
    write_text(out_dir / "table.tex", T.to_latex(f.models), files)
    always = {"runs": f.finals, "final_by_model": f.models, "curves": f.curves}
    if_any = {"gradient_flow": f.flow, "layer_responses": f.responses, "activations": f.acts, "scalars": f.logged}
    for name, frame in {**always, **{k: v for k, v in if_any.items() if not v.empty}}.items():
        write_csv(out_dir / "data" / f"{name}.csv", frame, files)


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
