"""The rules' table, as docs/findings.md holds it: every rule, what it detects and reads, and
each threshold's default with its source (tests/test_findings_docs.py keeps the file equal
to this)."""

from __future__ import annotations

from gradlab.findings.rules import RULES

__all__ = ["rules_markdown"]


def rules_markdown() -> str:
    lines = ["| rule | detects | reads | threshold | default | source of the default |", "|---|---|---|---|--:|---|"]
    for name, rule in RULES.items():
        reads = ", ".join(rule.reads)
        if not rule.thresholds:
            lines.append(f"| `{name}` | {rule.detects} | {reads} | — | — | — |")
        for i, (key, t) in enumerate(rule.thresholds.items()):
            head = f"| `{name}` | {rule.detects} | {reads} " if i == 0 else "| | | "
            lines.append(f"{head}| `{key}`: {t.meaning} | {t.default:g} | {t.source} |")
    return "\n".join(lines) + "\n"
