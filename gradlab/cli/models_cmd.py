"""`gradlab models`: the model zoo as a table (no torch import, no model is built)."""

from __future__ import annotations

import click

from gradlab.models.registry import ARCHES, INPUT_SIZES, NUM_CLASSES

ARCH_NOTES = {
    "cifar": "He et al. 2015 §4.2, option A shortcuts; also Fixup, ReZero, SkipInit, NF-ResNet",
    "preact": "He et al. 2016, pre-activation",
    "imagenet": "He et al. 2015 Table 1, torchvision layout",
    "seed": "the seed article's 5×5/3×3 block",
}


def _family_is_now_arch(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        click.echo("note: `gradlab models --family` is now `--arch`", err=True)
    return value


@click.command("models", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--arch",
    type=click.Choice(ARCHES),
    default=None,
    help="Only this architecture: cifar, preact, imagenet or seed",
)
@click.option(  # its old name (a family is plain, resnet, fixup, ...: `gradlab compare --families`)
    "--family", "old_arch", type=click.Choice(ARCHES), default=None, hidden=True, callback=_family_is_now_arch
)
def models(arch: str | None, old_arch: str | None) -> None:
    """List the model zoo: depth, residual blocks, parameters and MACs.

    MACs are the conv and linear multiply-accumulates for one input of the architecture's
    default size (3×32×32 cifar and preact, 3×224×224 imagenet, 1×28×28 seed).
    Parameters count 10 classes (1000 for imagenet).

    Besides the listed names, any CIFAR depth 6n+2 >= 8 builds (resnet{d}, plain{d}, and
    the later remedies fixup{d}, rezero{d}, skipinit{d}, nfresnet{d}), and so does
    seedresnet{k}/seedplain{k} for any k >= 1. resnet50 and resnet152 are the ImageNet nets;
    the CIFAR nets of those depths are cifar-resnet50/cifar-resnet152. The CIFAR plain nets
    and ResNets also build without BatchNorm or with tanh/sigmoid (train --norm, --act).

    \b
    Examples:
      gradlab models                     # every architecture
      gradlab models --arch cifar        # plain/ResNet-20...1202 and the remedies
    """
    if old_arch is not None:
        if arch not in (None, old_arch):
            raise click.UsageError("--family is the old name of --arch; give --arch only")
        arch = old_arch
    from gradlab.models.complexity import complexity
    from gradlab.units import format_macs, format_params
    from gradlab.models.registry import info, names

    header = ("name", "arch", "family", "depth", "blocks", "params", "MACs")
    rows = []
    for name in names(arch):
        meta = info(name)
        params, macs = complexity(name)
        rows.append((name, meta.arch, meta.family, str(meta.depth), str(meta.blocks),
                     format_params(params), format_macs(macs)))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, 1, 2}  # text columns; numbers align right

    def line(cells) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    click.echo(line(header))
    for row in rows:
        click.echo(line(row))
    click.echo()
    for shown in ARCHES if arch is None else (arch,):
        size = "×".join(map(str, INPUT_SIZES[shown]))
        click.echo(f"{shown:<9} {ARCH_NOTES[shown]}; {size} input, {NUM_CLASSES[shown]} classes")
    click.echo("MACs: conv and linear multiply-accumulates for one input. See `gradlab models -h`.")
