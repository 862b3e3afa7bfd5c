"""`gradlab check RUNS...`: the findings of runs, as a table or JSON, with an exit status a
CI can gate on."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gradlab.cli.shared_options import findings_settings, thresholds_options

FINDINGS_EXIT = 3  # a finding reached --fail-on (1 stays "bad input", 2 a usage error)


@click.command("check")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON (one object per finding).")
@click.option("--fail-on", type=click.Choice(["info", "warning", "error", "never"]), default="error",
              show_default=True, help=f"Exit with status {FINDINGS_EXIT} when a finding is this severe or more.")
@thresholds_options
@click.option("--rules", "list_rules", is_flag=True, help="List the rules, their thresholds and their sources.")
def check(paths, as_json, fail_on, overrides, thresholds, list_rules):
    """Say what is wrong in runs: vanishing or exploding gradients along depth, the first
    non-finite value, dead units, blocked paths, layers that do not learn, updates too
    large, loss spikes; each with its layers, steps and evidence.

    PATHS are run directories or folders of them. Findings are sorted by severity; the
    exit status is 3 when one reaches --fail-on (default: error), so a training codebase
    can gate its CI on it.

    \b
    Examples:
      gradlab check runs/quick-digits
      gradlab check runs/quick-digits --fail-on warning --json
      gradlab check runs/ --set vanishing_gradients.warning=1000 --set loss_spike.enabled=false
      gradlab check --rules
    """
    from gradlab import runs as R
    from gradlab.errors import ConfigError, RunDirError
    from gradlab.findings import SEVERITIES, check_runs
    from gradlab.findings.finding import severity_rank

    settings = findings_settings(overrides, thresholds)
    if list_rules:
        click.echo(rules_table(settings))
        return
    if not paths:
        raise ConfigError("give the runs to check (run directories or folders of them), e.g. "
                          "`gradlab check runs/quick-digits`; `gradlab check --rules` lists the rules")
    runs, problems = [], []
    for path in paths:
        found, bad = R.load_all(path)
        runs += found
        problems += bad
    for path, message in problems:
        click.secho(f"warning: skipped {path}: {message}", fg="yellow", err=True)
    if not runs:
        raise RunDirError(f"no readable run under {', '.join(map(str, paths))}")
    findings = check_runs(runs, settings)
    if as_json:
        click.echo(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        click.echo(findings_text(findings, len(runs)))
    if fail_on != "never" and any(severity_rank(f.severity) >= SEVERITIES.index(fail_on) for f in findings):
        raise SystemExit(FINDINGS_EXIT)


def findings_text(findings, n_runs: int) -> str:
    """The findings as a table (severity, rule, run, where, when), each with its evidence."""
    if not findings:
        return f"no findings in {n_runs} run(s)"
    lines = []
    for f in findings:
        lines.append(f"{f.severity.upper():7} {f.rule:20} {f.run}  {f.when}")
        lines.append(f"        {f.summary}")
        if f.where:
            lines.append(f"        where: {f.where_text}")
        lines.append(f"        evidence: {f.evidence}")
        lines.append(f"        why: {f.explanation}; try: {f.suggestion}")
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    lines.append(f"{len(findings)} finding(s) in {n_runs} run(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def rules_table(settings) -> str:
    """Every rule with what it detects, its thresholds in force and the source of each default."""
    lines = []
    for name, rule in settings.rules.items():
        state = "" if settings.enabled(name) else "  (off)"
        lines.append(f"{name}{state}: {rule.detects}")
        for key, t in rule.thresholds.items():
            lines.append(f"    {key} = {settings[name][key]:g}  ({t.meaning}; default {t.default:g} from {t.source})")
    return "\n".join(lines)
