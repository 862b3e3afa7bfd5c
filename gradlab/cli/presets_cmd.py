"""`gradlab presets`: the shipped presets, what each sets, and where its file is."""

from __future__ import annotations

import click


@click.command()
@click.option("--verbose", "-v", is_flag=True, help="Also every recipe and data setting of each preset.")
def presets(verbose: bool) -> None:
    """List the presets that --preset NAME takes (TOML files in experiments/), each with
    its description, dataset, length, batch and learning rate. `--config FILE` takes a
    file of the same form: copy one of these to start your own.

    \b
    Examples:
      gradlab presets
      gradlab presets -v              # every setting
      gradlab compare --preset quick --depths 20,56,110
    """
    import dataclasses

    from gradlab.config import presets as shipped

    for name, p in sorted(shipped().items()):
        r = p.recipe
        click.echo(f"{name}: {p.description}")
        click.echo(f"  data {p.data.name}, {r.steps:,} steps, batch {r.batch_size}, lr {r.lr:g}, "
                   f"compare depths {', '.join(map(str, p.compare.depths))}; file {p.source}")
        if verbose:
            for section, values in (("data", p.data), ("recipe", r), ("compare", p.compare)):
                pairs = ", ".join(f"{k} = {v!r}" for k, v in dataclasses.asdict(values).items())
                click.echo(f"  [{section}] {pairs}")
