"""Table 6 of He et al. 2015: model, depth, #params, n, final training and test error.

Final errors: test error at the last evaluation, training error from that same
evaluation (see collect.final_errors). With several seeds a cell reads "mean ± std
[low, high]": sample std (ddof=1) and the 95 % t-interval of the mean over the n seeds
(gradlab.seed_noise). A model chosen on validation error (gradlab.report.selection) says
which value was chosen and its validation error. Models with a run that did not finish
get a footnote mark and a footnote saying what happened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from gradlab import families as fam
from gradlab.report.wording import pct
from gradlab.units import format_params

MARKS = ("†", "‡", "§", "¶", "#")
LATEX_MARKS = {"†": r"$^\dagger$", "‡": r"$^\ddagger$", "§": r"$^\S$", "¶": r"$^\P$", "#": r"$^\#$"}
HEADER = ("model", "depth", "#params", "n", "train error (%)", "test error (%)")
CHOSEN = "chosen on validation"

CAPTION = (
    "Final training and test error (%). Test error at the last evaluation; training error from the "
    "same evaluation. With several seeds: mean ± std (sample std) over n seeds [95 % t-interval of the mean, "
    "within 0–100]; "
    "one seed gives no noise estimate."
)


@dataclass
class TableRow:
    family: str
    label: str  # "plain-20", "ResNet-56"
    mark: str  # footnote mark or ""
    depth: int
    params: str
    n: int
    train: str
    test: str
    chosen: str = ""  # "lr 0.1 (val 3.3%)" where a value was chosen on validation


def format_error(mean: float, std: float, n: int, ci: float = float("nan")) -> str:
    """Percent: "8.12" for one run, "8.12 ± 0.16 [6.70, 9.54]" (mean ± std [95 % interval])
    for several."""
    if mean is None or not math.isfinite(mean):
        return "–"
    if n > 1 and std is not None and math.isfinite(std):
        low, high = max(0.0, mean - ci), min(1.0, mean + ci)  # an error rate: the interval within 0-100 %
        band = f" [{pct(low):.2f}, {pct(high):.2f}]" if ci is not None and math.isfinite(ci) else ""
        return f"{pct(mean):.2f} ± {pct(std):.2f}{band}"
    return f"{pct(mean):.2f}"


def table_rows(models: pd.DataFrame) -> tuple[list[TableRow], list[str]]:
    """Display rows (plain first, then ResNets, by depth) and their footnotes."""
    rows, notes = [], []
    for m in models.itertuples(index=False):
        mark = ""
        if m.note:
            mark = MARKS[len(notes)] if len(notes) < len(MARKS) else f"[{len(notes) + 1}]"
            evaluated = m.test_mean is not None and math.isfinite(m.test_mean)
            notes.append(
                f"{mark} {m.label}: {m.note}; {'errors at its last evaluation' if evaluated else 'no evaluation yet'}."
            )
        rows.append(
            TableRow(
                family=m.family,
                label=m.label,
                mark=mark,
                depth=int(m.depth),
                params=format_params(int(m.params)),
                n=int(m.n),
                train=format_error(m.train_mean, m.train_std, m.n, getattr(m, "train_ci", float("nan"))),
                test=format_error(m.test_mean, m.test_std, m.n, getattr(m, "test_ci", float("nan"))),
                chosen=str(getattr(m, "chosen", "") or ""),
            )
        )
    return rows, notes


def _header(rows: list[TableRow]) -> tuple[str, ...]:
    return HEADER + ((CHOSEN,) if any(r.chosen for r in rows) else ())


def _cells(r: TableRow, header: tuple[str, ...]) -> list[str]:
    depth = str(r.depth) if fam.get(r.family).with_depth else "–"  # your own model: its layer count is no zoo depth
    cells = [r.label + r.mark, depth, r.params, str(r.n), r.train, r.test]
    return cells + ([r.chosen or "–"] if CHOSEN in header else [])


def to_markdown(models: pd.DataFrame) -> str:
    rows, notes = table_rows(models)
    header = _header(rows)
    lines = ["| " + " | ".join(header) + " |", "|:--|" + "--:|" * (len(header) - 1)]
    for r in rows:
        lines.append("| " + " | ".join(_cells(r, header)) + " |")
    out = "\n".join(lines) + "\n"
    out += "\n" + CAPTION + "\n"
    if notes:
        out += "\n" + "\n\n".join(notes) + "\n"
    return out


def latex_escape(text: str) -> str:
    """Escape LaTeX specials (%, _, &, #, $, {, }, ~, ^, backslash); ± becomes $\\pm$."""
    repl = {
        "\\": r"\textbackslash{}",
        "%": r"\%",
        "_": r"\_",
        "&": r"\&",
        "#": r"\#",
        "$": r"\$",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
    }
    out = "".join(repl.get(ch, ch) for ch in text)
    return out.replace("±", r"$\pm$").replace("–", "--")


def _latex_mark(mark: str) -> str:
    return LATEX_MARKS.get(mark, f"$^{{{latex_escape(mark)}}}$" if mark else "")


def to_latex(models: pd.DataFrame, label: str = "tab:degradation") -> str:
    """A booktabs table (needs \\usepackage{booktabs}); a rule separates plain and ResNet rows."""
    rows, notes = table_rows(models)
    header = _header(rows)
    out = [
        "% generated by gradlab report; needs \\usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(CAPTION)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    prev = None
    for r in rows:
        if prev is not None and r.family != prev:
            out.append(r"\midrule")
        prev = r.family
        cells = _cells(r, header)
        cells = [latex_escape(r.label) + _latex_mark(r.mark)] + [latex_escape(c) for c in cells[1:]]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        out.append(r"\par\smallskip\footnotesize")
        for n in notes:
            mark, _, text = n.partition(" ")
            out.append(_latex_mark(mark) + " " + latex_escape(text) + r"\\")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"
