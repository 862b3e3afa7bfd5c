"""`gradlab analyze ...`: analyses of freshly initialized networks (no training needed).

`gradlab probe ...` is its old name: the same subcommands, a note on stderr, not listed.
"""

from __future__ import annotations

import click

from gradlab.cli.main import CONTEXT_SETTINGS, LazyGroup

# name -> (module, attribute, one-line help)
ANALYSES = {
    "gradients": ("gradlab.cli.analyze_gradients_cmd", "gradients",
                  "Per-layer gradient norms at init against depth, plain vs residual."),
    "spp": ("gradlab.cli.analyze_spp_cmd", "spp", "Signal propagation plots (Brock et al. 2021)."),
    "shattering": ("gradlab.cli.analyze_shattering_cmd", "shattering",
                   "Shattered gradients along a line of inputs (Balduzzi et al. 2017)."),
}


@click.group(cls=LazyGroup, lazy_commands=ANALYSES, context_settings=CONTEXT_SETTINGS)
def analyze():
    """Analyses of freshly initialized plain and residual networks.

    Each writes a result folder (analysis.json, Parquet tables, its figure) that
    `gradlab report` can include.

    \b
    Examples:
      gradlab analyze gradients                 # -> runs/probes/gradients-digits
      gradlab analyze spp                       # -> runs/probes/spp-gaussian
      gradlab analyze shattering                # -> runs/probes/shattering
      gradlab report runs/probes --out reports/init
    """


class _OldName(LazyGroup):
    """The group under its old name: says the new one on stderr, then works the same."""

    def parse_args(self, ctx, args):
        click.echo("note: `gradlab probe` is now `gradlab analyze`", err=True)
        return super().parse_args(ctx, args)


@click.group(cls=_OldName, lazy_commands=ANALYSES, context_settings=CONTEXT_SETTINGS, hidden=True)
def probe():
    """Old name of `gradlab analyze` (works the same)."""
