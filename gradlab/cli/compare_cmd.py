"""`gradlab compare`: the degradation experiment in one command."""

from __future__ import annotations

import click

from gradlab.cli.options import preset_from, run_options, spec_overrides, trackers_from


@click.command()
@click.option("--depths", default=None, help="Comma-separated depths, e.g. 20,56,110 (default: the preset's).")
@click.option("--families", default=None, help="plain, resnet or both (default: plain,resnet).")
@click.option("--seeds", default=None, help="Comma-separated seeds, e.g. 0,1,2 (default: 0).")
@click.option("--out", type=click.Path(), default=None, help="Report folder (default: reports/<experiment>).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs trained at once (worker processes share the CPU threads or the GPU).")
@click.option("--formats", default="pdf,png", show_default=True, help="Figure formats.")
@click.option("--style", type=click.Choice(["paper", "notebook"]), default="paper", show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: only on a terminal).")
@run_options
def compare(depths, families, seeds, out, jobs, formats, style, progress, **opts):
    """Train plain and residual networks at matched depths and build a report.

    One run per (family, depth, seed) goes to <runs-dir>/<experiment>/; finished runs
    are reused and interrupted ones resume, so rerunning the command is safe. The
    report (figures, table, summary) goes to --out.

    \b
    Examples:
      gradlab compare --depths 20,56,110 --preset quick      # offline, digits, minutes on a CPU
      gradlab compare --depths 20,32,44,56 --preset paper --data-dir ~/data   # CIFAR-10 (GPU)
    """
    from gradlab.compare import compare as run_compare
    from gradlab.compare import parse_families, parse_int_list, plan

    preset = preset_from(opts)
    depths = parse_int_list(depths, "depths") if depths else preset.compare.depths
    families = parse_families(families) if families else preset.compare.families
    seeds = parse_int_list(seeds, "seeds") if seeds else preset.compare.seeds
    fmt = tuple(f.strip() for f in formats.split(",") if f.strip())
    bad = [f for f in fmt if f not in ("pdf", "png", "svg")]
    if bad or not fmt:
        raise click.BadParameter(f"unknown format {', '.join(bad) or '(none)'}; use pdf, png or svg", param_hint="--formats")
    specs = plan(preset, depths, families, seeds, **spec_overrides(opts))
    first = specs[0]
    click.echo(f"compare: {len(specs)} runs ({', '.join(families)} x depths {', '.join(map(str, depths))} x "
               f"seeds {', '.join(map(str, seeds))}) on {first.data.name}, {first.recipe.steps} steps each "
               f"-> {opts['runs_dir']}/{first.experiment}", err=True)
    trackers = trackers_from(opts)
    result = run_compare(specs, opts["runs_dir"], out=out, jobs=jobs, formats=fmt, style=style, progress=progress,
                         notify=lambda m: click.echo(m, err=True), callbacks=trackers)
    from gradlab.tracking import log_report

    for tracker in trackers:
        log_report(result.report, first.experiment, tracker.mode, tracker.project, tracker.entity)
    for warning in result.report_warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"report: {result.report_dir / 'report.md'}")
    if result.failed:
        click.echo(f"{len(result.failed)} run(s) did not finish: {', '.join(result.failed)}", err=True)
        raise SystemExit(1)
