"""`gradlab analyze spp`: signal propagation plots (Brock et al. 2021) at init."""

from __future__ import annotations

import time
from pathlib import Path

import click

from gradlab.cli.main import CONTEXT_SETTINGS
from gradlab.cli.analysis_options import at_init_options, model_options_from, prepare_out, report_done, seeds_from


@click.command("spp", context_settings=CONTEXT_SETTINGS)
@click.option("--depths", default="20,56,110", show_default=True, help="CIFAR depths (6n+2), comma-separated.")
@click.option("--families", default="plain,resnet", show_default=True,
              help="Comma-separated: plain, resnet, fixup, rezero, skipinit, nfresnet.")
@click.option("--inputs", type=click.Choice(["gaussian", "real"]), default="gaussian", show_default=True,
              help="gaussian: N(0, 1) in the dataset's image shape (no files needed); real: a training batch.")
@click.option("--zero-init-residual", is_flag=True,
              help="Zero the last BN of each residual branch, so every block starts as the identity.")
@at_init_options
def spp(depths: str, families: str, inputs: str, zero_init_residual: bool, **opts) -> None:
    """Signal propagation plots of freshly initialized ResNets and their plain twins.

    At each residual block output: the average channel squared mean and the average
    channel variance; and the residual branch's variance before the addition (Brock, De
    and Smith 2021). Writes a result folder (default runs/probes/spp-<inputs>) with its
    figure; `gradlab report` includes it.

    \b
    Examples:
      gradlab analyze spp                                 # Gaussian inputs, 20/56/110
      gradlab analyze spp --inputs real --dataset digits --out runs/probes/spp-real
      gradlab analyze spp --zero-init-residual --out runs/probes/spp-zero-init
      gradlab analyze spp --families resnet,nfresnet --depths 56 --out runs/probes/spp-nf
    """
    from gradlab import families as fam
    from gradlab.cli.options import parse_int_list
    from gradlab.analyses.spp import KIND, signal_propagation

    depth_list = parse_int_list(depths, "depths")
    family_list = fam.parse(families)
    seeds = seeds_from(opts)
    out = prepare_out(opts["out"], KIND, Path("runs/probes") / f"spp-{inputs}")
    start = time.perf_counter()
    result = signal_propagation(depth_list, family_list, seeds, inputs=inputs, batch_size=opts["batch_size"],
                                dataset=opts["dataset"], data_dir=opts["data_dir"], device=opts["device"],
                                zero_init_residual=zero_init_residual, progress=opts["progress"],
                                model_options=model_options_from(opts))  # fmt: skip
    result.save(out)
    report_done(out, opts["formats"], opts["style"], time.perf_counter() - start)
