"""Model names: what they mean, which ones are listed, and how to build them.

Parsing names needs no torch, so ``names`` and ``info`` stay light; ``build`` imports
the family modules only when it is called.

Grammar (case-insensitive):
    resnet{d} / plain{d}        d in 18, 34, 50, 101, 152: ImageNet nets; otherwise CIFAR
                                nets with d = 6n+2 >= 8
    cifar-resnet{d} / cifar-plain{d}
                                always CIFAR; the only way to get the CIFAR nets of depth
                                50 and 152, whose bare names mean the ImageNet models
    preresnet{d} / preplain{d}  d in 110, 164, 1001 (pre-activation, CIFAR-sized)
    seedresnet{k} / seedplain{k}  k >= 1 seed-article blocks (MNIST-sized)
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gradlab import families
from gradlab.errors import ConfigError, ModelError
from gradlab.models import options as model_options

if TYPE_CHECKING:  # torch is imported by build() only
    from torch import nn

ARCHES = families.ALL_ARCHES  # the zoo architectures, in listing order
INPUT_SIZES = {"cifar": (3, 32, 32), "preact": (3, 32, 32), "imagenet": (3, 224, 224), "seed": (1, 28, 28)}
NUM_CLASSES = {"cifar": 10, "preact": 10, "imagenet": 1000, "seed": 10}  # each architecture's dataset
COMPARE_ARCHES = ("cifar", "imagenet", "preact")  # what a preset's [compare] arch may name

CIFAR_NAMED = (20, 32, 44, 56, 110, 1202)
REMEDY_NAMED = (20, 56, 110)  # the depths `gradlab models` lists for the later remedies
PREACT = {110: (False, 18), 164: (True, 18), 1001: (True, 111)}  # depth -> (bottleneck, n)
IMAGENET = {  # depth -> (bottleneck, blocks per stage)
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}
SEED_NAMED = (2, 4, 8)
SHORTCUTS = ("A", "B", "C")

_NAME = re.compile(rf"^(cifar-|pre|seed)?({'|'.join(families.names())})(\d+)$")


@dataclass(frozen=True)
class ModelInfo:
    """What a model name means, without building it.

    depth: weighted layers on the main path, counted as in the papers (convs + fc; projection
    shortcuts excluded). input_size: the architecture's default (C, H, W); num_classes: its
    default classes. twin: the plain model for a ResNet and the ResNet for a plain model.
    """

    name: str
    arch: str
    family: str
    depth: int
    blocks: int
    input_size: tuple[int, int, int]
    twin: str

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.arch]


@dataclass(frozen=True)
class _Resolved:
    info: ModelInfo
    args: dict  # architecture arguments: n, k, layers, bottleneck (see arch_args)


def _cifar_depths_text() -> str:
    return "8, 14, 20, 26, 32, 38, 44, 50, 56, …, 110, …, 1202"


def _nearest_cifar(family: str, depth: int, prefix: str) -> str:
    below = max(8, depth - (depth - 2) % 6)
    above = below + 6 if below < depth else below
    options = sorted({below, above})
    return " or ".join(f"{prefix}{family}{d}" for d in options)


def _remedy_families() -> list[str]:
    """The families beyond the paper's twins that build CIFAR-layout nets (fixup, rezero, ...)."""
    return [f for f in families.names() if f not in families.PAPER and "cifar" in families.get(f).archs]


def _unknown(name: str) -> ModelError:
    hint = difflib.get_close_matches(name, names(), n=2, cutoff=0.6)
    did_you_mean = f" Did you mean {' or '.join(hint)}?" if hint else ""
    remedies = _remedy_families()
    return ModelError(
        f"unknown model {name!r}.{did_you_mean} Models are: resnet{{d}}/plain{{d}} (CIFAR with "
        f"d = 6n+2 >= 8, e.g. resnet20; ImageNet with d in 18, 34, 50, 101, 152), "
        f"{'/'.join(f + '{d}' for f in remedies)} (CIFAR, d = 6n+2 >= 8), "
        f"preresnet{{d}}/preplain{{d}} (d in 110, 164, 1001), seedresnet{{k}}/seedplain{{k}} "
        f"(k >= 1). Run `gradlab models` to list the named models."
    )


def _resolve(name: str) -> _Resolved:
    if not isinstance(name, str):
        raise ModelError(f"a model name must be a string such as 'resnet20', not {name!r}")
    key = name.strip().lower()
    m = _NAME.match(key)
    if m is None:
        raise _unknown(name)
    prefix, family, number = m.group(1) or "", m.group(2), int(m.group(3))
    fam = families.get(family)
    residual = fam.residual
    other = families.PLAIN if residual else families.RESNET  # the twin: same layers, shortcuts or not
    what = "ResNets" if residual else "plain nets"
    if fam.archs == ("cifar",) and prefix in ("pre", "seed"):
        raise ModelError(f"{fam.title} nets exist in the CIFAR layout only: {family}{{d}} with d = 6n+2 "
                         f"(e.g. {family}20, {family}56); {name} is not one")  # fmt: skip

    if prefix == "seed":
        if number < 1:
            raise ModelError(
                f"seed nets need at least one block: seed{family}{{k}} with k >= 1 "
                f"(e.g. seed{family}2, seed{family}4, seed{family}8); {name} has none"
            )
        k = number
        meta = ModelInfo(f"seed{family}{k}", "seed", family, 2 * k + 2, k,
                         INPUT_SIZES["seed"], f"seed{other}{k}")
        return _Resolved(meta, {"k": k})

    if prefix == "pre":
        if number not in PREACT:
            raise ModelError(
                f"pre-activation {what} come in depths 110 (basic blocks), 164 and 1001 "
                f"(bottleneck blocks); {name} is not one. Run `gradlab models --arch preact`."
            )
        bottleneck, n = PREACT[number]
        meta = ModelInfo(f"pre{family}{number}", "preact", family, number, 3 * n,
                         INPUT_SIZES["preact"], f"pre{other}{number}")
        return _Resolved(meta, {"n": n, "bottleneck": bottleneck})

    if not prefix and number in IMAGENET and "imagenet" in fam.archs:
        bottleneck, layers = IMAGENET[number]
        meta = ModelInfo(f"{family}{number}", "imagenet", family, number, sum(layers),
                         INPUT_SIZES["imagenet"], f"{other}{number}")
        return _Resolved(meta, {"layers": layers, "bottleneck": bottleneck})

    if number < 8 or (number - 2) % 6:
        imagenet = "" if prefix else f", and ImageNet {what} have 18, 34, 50, 101 or 152 layers"
        raise ModelError(
            f"CIFAR {what} have 6n+2 layers: {_cifar_depths_text()} "
            f"(nearest: {_nearest_cifar(family, number, prefix)}){imagenet}; {name} is not one. "
            f"Run `gradlab models` to list the named models."
        )
    n = (number - 2) // 6
    # The bare names of depths 50 and 152 mean the ImageNet nets: keep the prefix there.
    canon = prefix if number in IMAGENET and "imagenet" in fam.archs else ""
    twin = f"{'cifar-' if number in IMAGENET else ''}{other}{number}"  # (the twins have ImageNet nets)
    meta = ModelInfo(f"{canon}{family}{number}", "cifar", family, number, 3 * n, INPUT_SIZES["cifar"], twin)
    return _Resolved(meta, {"n": n})


def _construct(meta: ModelInfo, args: dict, num_classes, in_channels, shortcut, zero_init_residual, options: dict):
    arch, residual = meta.arch, meta.family == families.RESNET
    common = dict(residual=residual, num_classes=num_classes, in_channels=in_channels,
                  zero_init_residual=zero_init_residual)
    if meta.family not in families.PAPER:  # the remedies: their own nets in the CIFAR layout
        from gradlab.models.remedies import FixupResNet, GatedResNet, NFResNet

        size = dict(num_classes=num_classes, in_channels=in_channels, drop_path=options.get("drop_path", 0.0))
        if meta.family == "fixup":
            return FixupResNet(args["n"], **size)
        if meta.family == "nfresnet":
            return NFResNet(args["n"], **size)
        return GatedResNet(args["n"], meta.family, "bn" if meta.family == "rezero" else "none", **size)
    if arch == "cifar":
        from gradlab.models.cifar import CifarResNet

        return CifarResNet(args["n"], shortcut=shortcut or "A", **common, **options)
    if arch == "preact":
        from gradlab.models.preact import PreActResNet

        return PreActResNet(args["n"], args["bottleneck"], **common)
    if arch == "imagenet":
        from gradlab.models.imagenet import ImageNetResNet

        return ImageNetResNet(args["layers"], args["bottleneck"], **common)
    from gradlab.models.seed import SeedNet

    return SeedNet(args["k"], **common)


def arch_args(name: str) -> dict:
    """The architecture arguments behind a name: {"n"} blocks per stage (cifar), {"n",
    "bottleneck"} (preact), {"layers", "bottleneck"} (imagenet), {"k"} blocks (seed)."""
    return dict(_resolve(name).args)


def names(family: str | None = None) -> list[str]:
    """The named models of one family (cifar | preact | imagenet | seed) or of all, each
    ResNet followed by its plain twin, by increasing depth."""
    if family is not None and family not in ARCHES:
        raise ModelError(f"unknown model family {family!r}; choose one of {', '.join(ARCHES)}")
    twins = (families.RESNET, families.PLAIN)
    remedies = _remedy_families()
    listed = {
        "cifar": [f"{f}{d}" for d in CIFAR_NAMED for f in twins] + [f"{f}{d}" for f in remedies for d in REMEDY_NAMED],
        "preact": [f"pre{f}{d}" for d in PREACT for f in twins],
        "imagenet": [f"{f}{d}" for d in IMAGENET for f in twins],
        "seed": [f"seed{f}{k}" for k in SEED_NAMED for f in twins],
    }
    return [n for arch in ARCHES if family in (None, arch) for n in listed[arch]]


def info(name: str) -> ModelInfo:
    """What ``name`` means (arch, family, depth, blocks, input size, twin); raises ModelError."""
    return _resolve(name).info


def _check_positive(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{what} must be a positive integer, not {value!r}")


def model_name(family: str, depth: int, arch: str = "cifar") -> str:
    """The model of a family and depth in one architecture (a preset's [compare] arch).

    cifar: resnet50 and resnet152 name ImageNet nets, so their CIFAR namesakes are
    cifar-resnet50 etc.; imagenet: depths 18, 34, 50, 101, 152; preact: 110, 164, 1001.
    A bad family is a ConfigError, a depth the architecture lacks a ModelError.
    """
    if arch not in COMPARE_ARCHES:
        raise ConfigError(f"[compare] arch = '{arch}' is unknown; choose one of {', '.join(COMPARE_ARCHES)}")
    families.check([family])
    if arch == "preact":
        return info(f"pre{family}{depth}").name  # raises ModelError listing the valid depths
    name = f"{family}{depth}"
    meta = info(name)  # raises ModelError listing the valid depths
    if arch == "imagenet":
        if meta.arch != "imagenet":
            raise ModelError(f"ImageNet {family} nets have 18, 34, 50, 101 or 152 layers, not {depth}; "
                             f"give --depths such as 18,34")
        return name
    if meta.arch != "cifar":
        name = f"cifar-{name}"
        info(name)
    return name


def build(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    shortcut: str | None = None,
    zero_init_residual: bool = False,
    norm: str = "bn",
    act: str = "relu",
    drop_path: float = 0.0,
) -> nn.Module:
    """Build a freshly initialised model by name.

    num_classes: None means the architecture's default (1000 for the ImageNet nets, so that
        torchvision's state dicts load; 10 for the others).
    in_channels: None means the architecture's default (3, or 1 for seed nets).
    shortcut: "A" (default), "B" or "C", CIFAR family only. A plain twin has no shortcut, so
        the option is checked but changes nothing there.
    zero_init_residual: zero the last BN gamma of each residual branch (the last conv for
        pre-activation and seed blocks). Plain twins have no residual branch and ignore it.
    norm, act, drop_path: the CIFAR nets without BatchNorm, with tanh or sigmoid, with
        stochastic depth (gradlab.models.options says which net takes which).
    """
    resolved = _resolve(name)
    meta = resolved.info
    if num_classes is None:
        num_classes = meta.num_classes
    _check_positive(num_classes, "num_classes")
    if in_channels is None:
        in_channels = meta.input_size[0]
    _check_positive(in_channels, "in_channels")
    if shortcut is not None:
        if meta.arch != "cifar":
            fixed = {"preact": "1x1 projections where the shape changes",
                     "imagenet": "1x1 conv + BN projections where the shape changes (option B)",
                     "seed": "identity shortcuts only"}[meta.arch]
            raise ModelError(
                f"shortcut options A/B/C exist for the CIFAR nets only; {meta.name} always uses "
                f"{fixed}. Leave shortcut unset."
            )
        if not isinstance(shortcut, str) or shortcut.upper() not in SHORTCUTS:
            raise ModelError(
                f"shortcut must be A (zero-padding), B (projection where the shape changes) or "
                f"C (projection everywhere), not {shortcut!r}"
            )
        shortcut = shortcut.upper()
    if shortcut is not None and meta.family not in families.PAPER:
        raise ModelError(f"{meta.name} has its own shortcuts; leave shortcut unset")
    options = model_options.checked(meta.family, meta.arch, meta.name, norm, act, drop_path, bool(zero_init_residual))
    model = _construct(meta, resolved.args, num_classes, in_channels, shortcut, bool(zero_init_residual), options)
    model.name = meta.name
    model.options = {**options, **({"shortcut": shortcut} if shortcut not in (None, "A") else {}),
                     **({"zero_init_residual": True} if zero_init_residual else {})}  # fmt: skip
    return model


def describe(model: nn.Module, name: str, input_size: tuple[int, ...] | None = None) -> dict:
    """JSON-ready description written into spec.json: the report reads depth order, block
    boundaries and sizes from here and never imports the model.

    input_size: (C, H, W) of the images the model is trained on (the data's shape); None
    means the architecture's default height and width with the model's own input channels.
    """
    meta = info(name)
    if not callable(getattr(model, "probe_points", None)):
        raise ModelError(f"{type(model).__name__} is not a gradlab zoo model (no probe_points())")
    arch, family = getattr(model, "arch", None), getattr(model, "family", None)
    if (arch, family) != (meta.arch, meta.family):
        raise ModelError(
            f"the model is a {arch} {family} net but {meta.name!r} names a {meta.arch} {meta.family} net"
        )
    return {
        "name": meta.name,
        "arch": meta.arch,
        "family": meta.family,
        "depth": meta.depth,
        "blocks": meta.blocks,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "input_size": list(input_size or (_in_channels(model), *meta.input_size[1:])),
        "twin": meta.twin,
        "options": dict(getattr(model, "options", {})),
        "variant": model_options.variant_text(getattr(model, "options", {})),
        "probe_points": [p.to_dict() for p in model.probe_points()],
    }


def _in_channels(model: nn.Module) -> int:
    """The input channels of a zoo model: those of its stem, the first conv it registers."""
    return next(m.in_channels for m in model.modules() if hasattr(m, "in_channels") and hasattr(m, "kernel_size"))
