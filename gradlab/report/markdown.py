"""report.md: the findings, the summary, the runs, the figures with their captions, the table,
the analyses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from gradlab import __version__
from gradlab import runs as R
from gradlab.report import tables as T
from gradlab.report.figure_jobs import paper_runs


@dataclass
class DrawnFigure:
    """A figure as saved: its file stem, title, caption and files by format."""

    name: str
    title: str
    caption: str
    paths: dict[str, Path]


@dataclass
class FindingFigure:
    """The drawn figure that shows a finding, or why there is none."""

    figure: DrawnFigure | None
    reason: str = ""

    def link(self, out_dir: Path) -> str | None:
        """The figure's file relative to the report (PNG, else SVG, else its first format)."""
        if self.figure is None or not self.figure.paths:
            return None
        paths = self.figure.paths
        path = paths.get("png") or paths.get("svg") or next(iter(paths.values()))
        return path.relative_to(out_dir).as_posix()


@dataclass
class RulesInForce:
    """The findings rules that ran, those switched off, and thresholds away from their defaults."""

    on: list[str]
    off: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # "rule.key=value"


SEVERITY_HEADINGS = {"error": "Errors", "warning": "Warnings", "info": "Info"}  # the order of the section


def findings_section(findings, shown: list[FindingFigure], rules: RulesInForce, n_runs: int, out_dir: Path,
                     unchecked: dict[str, str] | None = None) -> str:
    """The "## Findings" section: the findings by severity (errors, warnings, info), one
    bullet each: rule — run — where — when: summary. Evidence. Why. Try: what to try. (its
    figure); or one line saying that every rule is silent. ``unchecked``: run -> why the
    rules did not see it."""
    lines = ["## Findings", ""]
    ran = f"every rule ({len(rules.on)})" if not rules.off else (
        f"every rule switched on ({len(rules.on)} of {len(rules.on) + len(rules.off)}; off: {', '.join(rules.off)})")
    settings = f" Thresholds changed from their defaults: {', '.join(rules.changed)}." if rules.changed else ""
    unchecked = unchecked or {}
    if unchecked:
        settings += " Not checked: " + "; ".join(f"`{cell(k)}` ({why})" for k, why in unchecked.items()) + "."
    runs = f"{n_runs - len(unchecked)} of {n_runs} runs" if unchecked else f"{n_runs} run{'s' if n_runs != 1 else ''}"
    if not findings:
        these = f"the {runs} checked" if unchecked else "these runs"
        return "\n".join(lines + [f"No findings: {ran} is silent on {these}.{settings}", "", ""])
    counts = ", ".join(f"{n} {s}" for s in SEVERITY_HEADINGS if (n := sum(f.severity == s for f in findings)))
    lines += [f"{len(findings)} finding{'s' if len(findings) != 1 else ''} in {runs} ({counts}), from {ran}; "
              f"the rules and their thresholds: `gradlab check --rules`.{settings}", ""]  # fmt: skip
    for severity, heading in SEVERITY_HEADINGS.items():
        these = [(f, fig) for f, fig in zip(findings, shown) if f.severity == severity]
        if these:
            lines += [f"### {heading}", ""] + [finding_line(f, fig, out_dir) for f, fig in these] + [""]
    return "\n".join(lines) + "\n"


def finding_line(finding, shown: FindingFigure, out_dir: Path) -> str:
    """One finding as a bullet, ending with a link to its figure (or why none was drawn)."""
    head = " — ".join([f"**{finding.rule}**", f"`{finding.run}`"] + [t for t in (finding.where_text, finding.when) if t])
    text = [_sentence(finding.summary), _sentence(finding.evidence), _sentence(finding.explanation),
            "Try: " + _sentence(finding.suggestion, capital=False) if finding.suggestion.strip() else ""]  # fmt: skip
    link = shown.link(out_dir)
    text.append(f"([figure: {shown.figure.title}]({link}))" if link else f"(no figure drawn: {shown.reason})")
    return f"- {head}: " + " ".join(t for t in text if t).replace("\n", " ")


def _sentence(text: str, capital: bool = True) -> str:
    """``text`` with a closing full stop (and a capital first letter)."""
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:] if capital else text
    return text if text.endswith((".", "!", "?")) else text + "."


def embed(fig: DrawnFigure, out_dir: Path) -> str:
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


def cell(text) -> str:
    """Text safe inside a Markdown table cell or list item (one line, no column breaks)."""
    return str(text).replace("|", r"\|").replace("\n", " ")


def runs_table(finals: pd.DataFrame, table: pd.DataFrame) -> str:
    t = table.set_index("run")
    lines = ["| run | model | seed | state | step | train err (%) | test err (%) |", "|:--|:--|--:|:--|--:|--:|--:|"]
    for f in finals.itertuples(index=False):
        row = t.loc[f.run]
        state = f.note or f.state
        step = f"{row['step']:,}" + (f" / {row['total_steps']:,}" if row["total_steps"] else "")
        tr = "–" if pd.isna(f.train_err) else f"{100 * f.train_err:.2f}"
        te = "–" if pd.isna(f.test_err) else f"{100 * f.test_err:.2f}"
        lines.append(f"| `{cell(f.run)}` | {f.label} | {f.seed} | {cell(state)} | {step} | {tr} | {te} |")
    return "\n".join(lines) + "\n"


def generated() -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"Generated by gradlab {__version__} on {when}."


def context_line(runs: list[R.Run]) -> str:
    """One line saying what the runs are: how many, experiment, data, recipe."""

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
    return "; ".join(parts) + f". {generated()}"


def problems(warnings: list[str]) -> list[str]:
    return ["### Problems", ""] + [f"- {cell(w)}" for w in warnings] + [""] if warnings else []


NOTHING_COMPARED = ("No two of these models are compared: the summary compares zoo nets of one family at two "
                    "depths, and two families at one depth, and these runs hold no such pair.")


def report(runs, table, finals, models, figures, skipped, layer_data, warnings, sentences, out_dir,
           findings: str = "") -> str:
    """report.md of training runs (the analyses' section is appended by :func:`analyses`);
    ``findings``: the findings section (:func:`findings_section`), first after the title."""
    experiments = sorted({str(r.spec.get("experiment") or "") for r in runs} - {""})
    paper = paper_runs(runs)  # zoo nets: the paper's names; runs of your own loop: plain ones
    kind = "Degradation report" if paper else "Training report"
    title = f"{kind}: {', '.join(experiments)}" if experiments else kind
    lines = [f"# {title}", "", context_line(runs), ""]
    if findings:
        lines += [findings.rstrip("\n"), ""]
    lines += ["## Summary", ""] + [f"- {s}" for s in sentences or [NOTHING_COMPARED]] + [""]
    lines += ["## Runs", "", runs_table(finals, table)]
    lines += [
        "Final errors: test error at the last evaluation, training error from that same evaluation.",
        "",
    ]
    lines += problems(warnings)
    lines += ["## Figures", ""]
    for fig in figures:
        lines.append(embed(fig, out_dir))
    if layer_data.missing:
        lines += [
            "Layer statistics missing for some runs (their gradient-flow, heatmap and response lines are absent):",
            "",
        ]
        lines += [f"- `{cell(k)}`: {cell(v)}" for k, v in layer_data.missing.items()] + [""]
    for s in skipped:
        lines += [f"Skipped: {s}.", ""]
    lines += ["## Table (Table 6 style)" if paper else "## Table: final errors", "", T.to_markdown(models), "LaTeX (booktabs): [table.tex](table.tex)", ""]
    lines += ["Numbers behind the figures: [data/](data/) (CSV).", ""]
    return "\n".join(lines)


def analyses_only(entries, figures: list[DrawnFigure], warnings: list[str], out_dir: Path) -> str:
    """report.md of analysis folders alone."""
    n = len(entries)
    lines = ["# Analysis report", "",
             f"{n} analysis folder{'s' if n != 1 else ''}, no training runs. {generated()}", ""]  # fmt: skip
    return "\n".join(lines + problems(warnings)) + analyses(entries, figures, out_dir)


def analyses(entries, figures: list[DrawnFigure], out_dir: Path) -> str:
    """The "## Analyses" section: per folder its figure, caption, sentences and source."""
    if not entries:
        return ""
    lines = ["", "## Analyses", ""]
    for entry, fig in zip(entries, figures):
        lines.append(embed(fig, out_dir))
        lines += [f"- {cell(s)}" for s in entry.sentences] + ([""] if entry.sentences else [])
        lines += [f"From `{cell(entry.analysis.path)}` ({entry.analysis.kind}).", ""]
    return "\n".join(lines)
