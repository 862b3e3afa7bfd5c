"""`gradlab probe shattering`: shattered gradients along a line of inputs (Balduzzi et al. 2017)."""

from __future__ import annotations

from pathlib import Path

import click

from gradlab.report.style import STYLES


@click.command("shattering")
@click.option("--max-depth", type=click.IntRange(min=1), default=50, show_default=True,
              help="Deepest net; every depth 1..max-depth is measured (one pass per net).")
@click.option("--width", type=click.IntRange(min=1), default=200, show_default=True, help="Units per layer.")
@click.option("--points", type=click.IntRange(min=3), default=256, show_default=True,
              help="Inputs on the line [-2, 2].")
@click.option("--seeds", type=click.IntRange(min=1), default=10, show_default=True,
              help="Nets per family (seeds 0..N-1); results are their mean.")
@click.option("--bn/--no-bn", "batch_norm", default=True, show_default=True,
              help="Batch normalization before every ReLU (the paper's setting).")
@click.option("--max-lag", type=click.IntRange(min=1), default=None,
              help="Longest lag of the autocorrelation table [default: 64, at most points-1].")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("runs/probes/shattering"),
              show_default=True, help="Result folder (analysis.json, Parquet tables, figures/).")
@click.option("--formats", default="pdf,png", show_default=True, help="Figure formats, comma-separated.")
@click.option("--style", type=click.Choice(STYLES), default="paper", show_default=True, help="Figure style.")
def shattering(max_depth: int, width: int, points: int, seeds: int, batch_norm: bool, max_lag: int | None,
               out: Path, formats: str, style: str) -> None:  # fmt: skip
    """Input-gradients of random plain and residual nets over a line of inputs, against depth.

    Fully-connected ReLU nets (1-D input, width 200, He init, BN) as in Balduzzi et al.
    2017: how correlated df/dx is at neighbouring and at distant inputs, with the
    predicted decay rates 2^-L (plain) and 1/sqrt(L) (residual). About 15 s on 2 CPU cores.

    \b
    Example:
      gradlab probe shattering --max-depth 50 --seeds 10 --out runs/probes/shattering
    """
    from gradlab.analysis_dirs import check_out_dir, read_analysis
    from gradlab.probes.shattering import KIND, ShatteringSettings
    from gradlab.probes.shattering import shattering as measure
    from gradlab.report.analyses import draw_analysis
    from gradlab.report.build import parse_formats
    from gradlab.report.figures_shattering import sentences

    parse_formats(formats)
    check_out_dir(out, KIND)
    settings = ShatteringSettings(max_depth=max_depth, width=width, points=points, seeds=seeds,
                                  batch_norm=batch_norm, max_lag=max_lag)  # fmt: skip
    result = measure(settings.validated())
    folder = result.save(out)
    figures = draw_analysis(folder, formats=formats, style=style)
    click.echo(f"wrote {folder} ({', '.join(sorted(result.tables))} tables)")
    for path in figures:
        click.echo(f"figure: {path}")
    for sentence in sentences(read_analysis(folder)):
        click.echo(f"  - {sentence}")
