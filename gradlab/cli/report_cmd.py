"""`gradlab report`: figures, tables and a summary from run directories (no torch)."""

from __future__ import annotations

from pathlib import Path

import click

from gradlab.cli.shared_options import formats_option, style_option
from gradlab.errors import RunInterrupted


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out", "-o", "out", type=click.Path(path_type=Path), default=None,
    help="Report folder [default: reports/<experiment of the runs>, or reports/report].",
)  # fmt: skip
@formats_option
@style_option
def report(runs: tuple[Path, ...], out: Path | None, formats: tuple[str, ...], style: str) -> None:
    """Build paper-style figures, a Table-6-style table and a summary from RUNS.

    RUNS are run directories or folders holding them (e.g. runs/degradation), and the
    result folders of `gradlab analyze` and `gradlab lesion`. A run that cannot be read is
    skipped with a warning; the report is built from the others.

    \b
    Examples:
      gradlab report runs/quick-digits                       # -> reports/quick-digits
      gradlab report runs/quick-digits runs/probes --out reports/all --formats png
      gradlab report runs/my-model --style notebook          # a run of gradlab.watch
    """
    from gradlab.interrupt import StopNow, stop_at_once

    try:
        with stop_at_once():  # Ctrl-C or SIGTERM: the drawing child and the half-built folder go
            from gradlab.report.build import build_report
            from gradlab.report.files import check_out_dir

            if out is not None:
                check_out_dir(out)
            result = build_report(list(runs), out, formats=formats, style=style)
    except StopNow as e:
        where = out if out is not None else "the report folder"
        raise RunInterrupted(f"report interrupted by {e}; {where} holds the previous report or the new one, "
                             "never part of one; rerun the same command to build it", e.exit_code) from None
    for w in result.warnings:
        click.secho(f"warning: {w}", fg="yellow", err=True)
    figures = sum(1 for f in result.files if f.parent.name == "figures")
    click.echo(f"wrote {len(result.files)} files ({figures} figure files) to {result.out_dir}")
    click.echo(f"report: {result.report}")
    for sentence in result.summary:
        click.echo(f"  - {sentence}")
