"""Options and output shared by the commands that write analysis folders (`gradlab analyze
...`, `gradlab lesion`), one definition for all.

    @at_init_options                     # or @output_options (figures, progress) alone
    def command(..., **opts):
        out = prepare_out(opts["out"], kind, default)                  # checked before any work
        ...                                                            # compute, then result.save(out)
        report_done(out, opts["formats"], opts["style"], elapsed)        # draws, prints where and what
"""

from __future__ import annotations

from pathlib import Path

import click

from gradlab.cli.options import parse_int_list
from gradlab.cli.shared_options import formats_option, norm_act_options, style_option
from gradlab.analyses.init_inputs import DATASETS


def output_options(f):
    """Figure formats and style, progress bar: what every analysis command shares."""
    options = [
        formats_option,
        style_option,
        click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a terminal)."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def at_init_options(f):
    """Data, seeds, batch, device and output folder of the at-init analyses, plus output_options."""
    options = [
        click.option("--dataset", type=click.Choice(DATASETS), default="digits", show_default=True,
                     help="Dataset whose batch (or image shape) is used; digits works offline."),
        click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                     help="Folder holding the dataset files (default: $GRADLAB_DATA or ~/.cache/gradlab/data)."),
        click.option("--seeds", default="0,1,2", show_default=True,
                     help="Seeds to average over (each sets the weights and the batch), comma-separated."),
        click.option("--batch-size", type=click.IntRange(min=2), default=128, show_default=True,
                     help="Examples in the batch."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        norm_act_options,
        click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
                     help="Result folder (refused if it holds anything but this kind of analysis)."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return output_options(f)


def prepare_out(out: Path | None, kind: str, default: Path) -> Path:
    """The result folder (`out`, else `default`), checked before any work, so that a refusal
    costs nothing (--formats was checked as it was parsed)."""
    from gradlab.analysis_dirs import check_out_dir

    return check_out_dir(out if out is not None else default, kind)


def model_options_from(opts: dict) -> dict:
    """The build options given (--norm, --act), for every net of the sweep."""
    return {k: opts[k] for k in ("norm", "act") if opts.get(k) is not None}


def seeds_from(opts: dict) -> tuple[int, ...]:
    return parse_int_list(opts["seeds"], "seeds")


def report_done(out: Path, formats: tuple[str, ...], style: str, elapsed: float) -> None:
    """Draw the folder's figure, then print the folder, the figure files and the summary."""
    from gradlab.report.analyses import analysis_sentences, draw_analysis

    files = draw_analysis(out, formats=formats, style=style)
    click.echo(f"wrote {out} in {elapsed:.1f} s")
    for path in files:
        click.echo(f"figure: {path}")
    for sentence in analysis_sentences(out):
        click.echo(f"  - {sentence}")
