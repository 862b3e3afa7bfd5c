"""`gradlab report`: findings, figures, tables and a summary from run directories (no torch)."""

from __future__ import annotations

from pathlib import Path

import click

from gradlab.cli.shared_options import findings_settings, formats_option, style_option, thresholds_options
from gradlab.errors import RunInterrupted


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out", "-o", "out", type=click.Path(path_type=Path), default=None,
    help="Report folder [default: reports/<experiment of the runs>, or reports/report].",
)  # fmt: skip
@formats_option
@style_option
@thresholds_options
@click.option("--select", "select", default=None, metavar="KEY",
              help="Show each model at the value of the swept recipe KEY (e.g. lr) with its lowest validation "
                   "error, mean over seeds (runs trained with --val-split).")
@click.option("--select-on", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="What --select chooses on; test is refused (the test error would be biased low).")
def report(runs: tuple[Path, ...], out: Path | None, formats: tuple[str, ...], style: str,
           overrides: tuple[str, ...], thresholds: Path | None, select: str | None, select_on: str) -> None:
    """Build findings, paper-style figures, a Table-6-style table and a summary from RUNS.

    RUNS are run directories or folders holding them (e.g. runs/degradation), and the
    result folders of `gradlab analyze` and `gradlab lesion`. A run that cannot be read is
    skipped with a warning; the report is built from the others.

    report.md starts with the findings of `gradlab check` (same rules, same --set and
    --thresholds), each linked to the figure that shows it; data/findings.csv and
    data/findings.json hold them too.

    \b
    Examples:
      gradlab report runs/quick-digits                       # -> reports/quick-digits
      gradlab report runs/quick-digits runs/probes --out reports/all --formats png
      gradlab report runs/my-model --style notebook          # a run of gradlab.watch
      gradlab report runs/ --set vanishing_gradients.warning=1000 --set loss_spike.enabled=false
      gradlab report runs/quick-digits --select lr           # each model at its lr chosen on validation
    """
    from gradlab.interrupt import StopNow, stop_at_once

    from gradlab.report.selection import check_request

    settings = findings_settings(overrides, thresholds)  # a wrong --set fails before any work
    selected = check_request(select.split(",") if select else (), select_on)

    try:
        with stop_at_once():  # Ctrl-C or SIGTERM: the drawing child and the half-built folder go
            from gradlab.report.build import build_report
            from gradlab.report.files import check_out_dir

            if out is not None:
                check_out_dir(out)
            result = build_report(list(runs), out, formats=formats, style=style, findings_settings=settings,
                                  select=selected)
    except StopNow as e:
        where = out if out is not None else "the report folder"
        raise RunInterrupted(f"report interrupted by {e}; {where} holds the previous report or the new one, "
                             "never part of one; rerun the same command to build it", e.exit_code) from None
    for w in result.warnings:
        click.secho(f"warning: {w}", fg="yellow", err=True)
    figures = sum(1 for f in result.files if f.parent.name == "figures")
    click.echo(f"wrote {len(result.files)} files ({figures} figure files) to {result.out_dir}")
    click.echo(f"report: {result.report}")
    if result.table is not None:  # a report of runs (not of analysis folders alone)
        click.echo(findings_lines(result.findings))
    for sentence in result.summary:
        click.echo(f"  - {sentence}")


def findings_lines(findings) -> str:
    """How many findings of each severity report.md starts with, then one line each."""
    if not findings:
        return "findings: none"
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    lines = ["findings (at the top of report.md): " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    for f in findings:
        when = f", {f.when}" if f.when else ""
        lines.append(f"  {f.severity.upper():7} {f.rule} in {f.run}{when}: {f.summary}")
    return "\n".join(lines)
