"""`gradlab analyze shattering`: shattered gradients along a line of inputs (Balduzzi et al. 2017)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from gradlab.cli.analysis_options import output_options, prepare_out, report_done


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
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Result folder [default: runs/probes/shattering].")
@output_options
def shattering(max_depth: int, width: int, points: int, seeds: int, batch_norm: bool, max_lag: int | None,
               out: Path | None, formats: tuple[str, ...], style: str, progress: bool | None) -> None:  # fmt: skip
    """Input-gradients of random plain and residual nets over a line of inputs, against depth.

    Fully-connected ReLU nets (1-D input, width 200, He init, BN) as in Balduzzi et al.
    2017: how correlated df/dx is at neighbouring and at distant inputs, with the
    predicted decay rates 2^-L (plain) and 1/sqrt(L) (residual).

    \b
    Example:
      gradlab analyze shattering --max-depth 50 --seeds 10 --out runs/probes/shattering
    """
    from gradlab.analyses.shattering import KIND, ShatteringSettings
    from gradlab.analyses.shattering import shattering as measure

    out = prepare_out(out, KIND, Path("runs/probes/shattering"))
    settings = ShatteringSettings(max_depth=max_depth, width=width, points=points, seeds=seeds,
                                  batch_norm=batch_norm, max_lag=max_lag)  # fmt: skip
    start = time.perf_counter()
    measure(settings.validated(), progress=progress).save(out)
    report_done(out, formats, style, time.perf_counter() - start)
