"""`compare`'s sweep and selection options: recipe values as comma-separated lists
(--lr 0.01,0.03,0.1), --set KEY=V1,V2 for any other recipe key, and --select KEY to choose
a swept value per model on validation error (gradlab.sweep, gradlab.report.selection)."""

from __future__ import annotations

import click

SWEEP_FLAGS = {"steps": "Training iterations (the lr milestones scale with it); a list sweeps them, e.g. 200,300.",
               "batch_size": "Mini-batch size; a list sweeps it, e.g. 64,128.",
               "lr": "Base learning rate; a list sweeps it, e.g. 0.01,0.03,0.1.",
               "weight_decay": "Weight decay; a list sweeps it, e.g. 1e-4,5e-4.",
               "warmup_lr": "Warm-up learning rate of nets of warmup_min_depth layers and more; a list sweeps it."}


def sweep_options(f):
    """--steps, --batch-size, --lr, --weight-decay, --warmup-lr (each a value or a list),
    --set KEY=V1,V2 (repeatable), --select KEY and --select-on val."""
    options = [click.option(f"--{key.replace('_', '-')}", key, default=None, metavar="V[,V...]", help=text)
               for key, text in SWEEP_FLAGS.items()]
    options += [
        click.option("--set", "sets", multiple=True, metavar="KEY=V1,V2",
                     help="Sweep any recipe key (repeatable), e.g. --set momentum=0.8,0.9 --set milestones=150/225,100/200."),
        click.option("--select", "select", default=None, metavar="KEY",
                     help="Choose the swept KEY's value per family x depth x build option on validation error "
                          "(mean over seeds; needs --val-split); the report shows each model at its chosen value."),
        click.option("--select-on", type=click.Choice(["val", "test"]), default="val", show_default=True,
                     help="What --select chooses on; test is refused (the test error would be biased low)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def sweep_from(opts: dict) -> dict:
    """Pop the sweep's flags from ``opts`` and return the sweep {recipe key: values}."""
    from gradlab.sweep import from_options

    flags = {key: opts.pop(key) for key in SWEEP_FLAGS}
    return from_options(flags, opts.pop("sets"))
