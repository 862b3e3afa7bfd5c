"""`gradlab probe ...`: analyses of freshly initialized networks (no training needed)."""

from __future__ import annotations

import click

from gradlab.cli.main import CONTEXT_SETTINGS, LazyGroup

# name -> (module, attribute, one-line help)
PROBES = {
    "gradients": ("gradlab.cli.probe_gradients_cmd", "gradients",
                  "Per-layer gradient norms at init against depth, plain vs residual."),
    "spp": ("gradlab.cli.probe_spp_cmd", "spp", "Signal propagation plots (Brock et al. 2021)."),
    "shattering": ("gradlab.cli.probe_shattering_cmd", "shattering",
                   "Shattered gradients along a line of inputs (Balduzzi et al. 2017)."),
}


@click.group(cls=LazyGroup, lazy_commands=PROBES, context_settings=CONTEXT_SETTINGS)
def probe():
    """Analyses of freshly initialized plain and residual networks.

    Each writes a result folder (analysis.json, Parquet tables, its figure) that
    `gradlab report` can include.
    """
