"""`gradlab analyze gradients`: per-layer gradient norms at init, plain vs residual."""

from __future__ import annotations

import time
from pathlib import Path

import click

from gradlab.cli.main import CONTEXT_SETTINGS
from gradlab.cli.analysis_options import at_init_options, model_options_from, prepare_out, report_done, seeds_from


@click.command("gradients", context_settings=CONTEXT_SETTINGS)
@click.option("--depths", default="20,56,110", show_default=True,
              help="CIFAR depths (6n+2), comma-separated.")
@click.option("--families", default="plain,resnet", show_default=True,
              help="Comma-separated: plain, resnet, fixup, rezero, skipinit, nfresnet.")
@at_init_options
def gradients(depths: str, families: str, **opts) -> None:
    """Gradient norms along depth in freshly initialized nets of each family (--families).

    For each net and seed: one forward/backward of cross-entropy on a real batch in
    training mode; ||dL/dW|| of every main-path conv/fc weight and ||dL/dh|| at every conv
    output, geometric mean over seeds, and the first/last conv-layer ratio per depth.
    Writes a result folder (default runs/probes/gradients-<dataset>) with its figure;
    `gradlab report` includes it.

    \b
    Examples:
      gradlab analyze gradients                                   # 20, 56, 110 on digits
      gradlab analyze gradients --depths 20,56,110,218,1202 --seeds 0
      gradlab analyze gradients --families plain --norm none --act sigmoid --out runs/probes/gradients-sigmoid
      gradlab report runs/probes/gradients-digits --out reports/init
    """
    from gradlab import families as fam
    from gradlab.cli.options import parse_int_list
    from gradlab.analyses.init_gradients import KIND, init_gradients

    depth_list = parse_int_list(depths, "depths")
    family_list = fam.parse(families)
    seeds = seeds_from(opts)
    out = prepare_out(opts["out"], KIND, Path("runs/probes") / f"gradients-{opts['dataset']}")
    start = time.perf_counter()
    result = init_gradients(depth_list, family_list, seeds, batch_size=opts["batch_size"], dataset=opts["dataset"],
                            data_dir=opts["data_dir"], device=opts["device"], progress=opts["progress"],
                            model_options=model_options_from(opts))  # fmt: skip
    result.save(out)
    report_done(out, opts["formats"], opts["style"], time.perf_counter() - start)
