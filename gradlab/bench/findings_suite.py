"""The pathology suite, scored: every case of gradlab.bench.pathology_cases trained, checked
by the findings engine, and set against its known answer. Per case: whether the expected rule
fired, whether it named the layer and the step where the pathology was put in (where the case
defines them), the other findings, and every finding on a healthy run: a false alarm at
warning or above is a defect (issue #28)."""

from __future__ import annotations

from pathlib import Path

from gradlab import runs as R
from gradlab.bench.pathology_cases import CASES, Case, case
from gradlab.findings import check_runs
from gradlab.findings.finding import Finding, severity_rank

__all__ = ["score", "suite", "suite_markdown"]


def _names_layer(f: Finding, layer: str) -> bool:
    """Whether ``f`` names ``layer``: the layer itself, a parameter of it, or a layer under a prefix."""
    return any(p.layer == layer or p.layer.startswith(layer + ".") for p in f.where)


def score(c: Case, findings: list[Finding]) -> dict:
    """One row of the suite's table for case ``c``."""
    row = {"case": c.name, "kind": c.kind, "expected": c.rule or "nothing", "put in": _put_in(c)}
    if c.kind == "healthy":
        alarms = [f for f in findings if severity_rank(f.severity) >= 1]
        row.update(detected="-", where="-", when="-", ok=not alarms,
                   others=_list(findings) or "none", alarms=len(alarms))  # fmt: skip
        return row
    hits = [f for f in findings if f.rule == c.rule]
    best = hits[0] if hits else None
    where_ok = c.layer is None or (best is not None and _names_layer(best, c.layer))
    when_ok = c.step is None or (best is not None and best.first_step is not None and 0 <= best.first_step - c.step <= 1)
    row.update(detected="yes" if best else "NO",
               where=(best.where_text if best else "-") + ("" if where_ok else " (NOT the layer put in)"),
               when=(best.when if best else "-") + ("" if when_ok else " (NOT the step put in)"),
               ok=bool(best) and where_ok and when_ok,
               others=_list([f for f in findings if f is not best]) or "none", alarms=0)  # fmt: skip
    return row


def _put_in(c: Case) -> str:
    if c.kind == "healthy":
        return "-"
    parts = [x for x in (c.layer, None if c.step is None else f"step {c.step}") if x]
    return ", ".join(parts) or "whole net"


def _list(findings: list[Finding]) -> str:
    return "; ".join(f"{f.rule} ({f.severity})" for f in findings)


def suite(root: Path, names=None, progress=lambda message: None) -> list[dict]:
    """Train the cases under ``root`` (or reuse them there), check each, score each."""
    rows = []
    for c in CASES if names is None else [case(n) for n in names]:
        found = R.find_run_dirs(root / c.name) if (root / c.name).exists() else []
        run_dir = found[0] if found else c.train(root)
        rows.append(score(c, check_runs([R.read_run(run_dir)])))
        progress(f"{c.name}: {'ok' if rows[-1]['ok'] else 'NOT OK'}")
    return rows


def suite_markdown(rows: list[dict]) -> str:
    head = "| case | expected | put in | detected | where | when | other findings | ok |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} ({r['kind']}) | {r['expected']} | {r['put in']} | {r['detected']} | {r['where']} "
                     f"| {r['when']} | {r['others']} | {'yes' if r['ok'] else '**no**'} |")
    return "\n".join(lines) + "\n"
