"""Runs every enabled rule on every run and sorts what they find: errors first, then by rule,
run and step."""

from __future__ import annotations

from gradlab import runs as R
from gradlab.findings.finding import Finding, severity_rank
from gradlab.findings.rules import RULES
from gradlab.findings.thresholds import Settings
from gradlab.findings.view import RunView

__all__ = ["check_runs", "default_settings"]


def default_settings() -> Settings:
    return Settings(RULES)


def check_runs(runs: list[R.Run], settings: Settings | None = None, keys: dict | None = None) -> list[Finding]:
    """Findings of every run (``keys``: run path -> the name to give it; default its name)."""
    settings = settings or default_settings()
    order = {name: i for i, name in enumerate(RULES)}
    found: list[Finding] = []
    views = [RunView(run, (keys or {}).get(run.path, run.name)) for run in runs]
    for name, rule in RULES.items():
        if not settings.enabled(name):
            continue
        if rule.check_group is not None:
            found += rule.check_group(views, settings[name])
        for view in views if rule.check is not None else ():
            found += rule.check(view, settings[name])
    return sorted(found, key=lambda f: (-severity_rank(f.severity), order[f.rule], f.run, f.first_step or 0))
