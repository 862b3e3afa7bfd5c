"""`gradlab lesion RUNS...`: delete one layer or block of trained nets at a time (Veit et al. 2016)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from gradlab.cli.analysis_options import output_options, prepare_out, report_done


@click.command("lesion")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Result folder [default: <experiment folder of the runs>/lesion].")
@click.option("--plain-unit", type=click.Choice(["layer", "block"]), default="layer", show_default=True,
              help="What plain nets lose per deletion (residual nets always lose one block).")
@click.option("--device", default="cpu", show_default=True, help="cpu, auto, cuda or cuda:N.")
@output_options
def lesion(runs: tuple[Path, ...], out: Path | None, plain_unit: str, device: str, formats: tuple[str, ...],
           style: str, progress: bool | None) -> None:
    """Test error of trained nets with each layer (plain) or block (residual) deleted in turn.

    RUNS are finished run directories or folders of them. A residual block is deleted by
    zeroing its branch (only the shortcut is left). A plain net loses one weighted layer at
    a time (conv with its BN and ReLU), or with --plain-unit block one whole block, replaced
    by the identity where its input and output shapes match (others: NaN). Runs inside a
    folder that are not finished are left out with a warning.

    \b
    Example (after `gradlab compare --depths 20,56,110 --preset quick`):
      gradlab lesion runs/quick-digits            # writes runs/quick-digits/lesion
      gradlab lesion runs/quick-digits --plain-unit block --out /tmp/lesion-blocks
    """
    from gradlab.analyses.lesion import KIND, collect_runs, default_out_dir, no_deletion_warnings
    from gradlab.analyses.lesion import lesion as measure

    found, warnings = collect_runs(list(runs))
    out = prepare_out(out, KIND, default_out_dir(found) if out is None else out)
    for w in warnings:
        click.secho(f"warning: {w}", fg="yellow", err=True)
    start = time.perf_counter()
    result = measure(found, unit=plain_unit, device=device, progress=progress)
    for w in no_deletion_warnings(result):
        click.secho(f"warning: {w}", fg="yellow", err=True)
    result.save(out)
    click.echo(f"lesioned {len(found)} run(s)")
    report_done(out, formats, style, time.perf_counter() - start)
