"""The families of networks gradlab compares at matched depth: the one place they are named.

A family is what a model name starts with (``plain56``, ``resnet56``, ``fixup56``) and what
spec.json's ``model.family`` says. Everything that lists, orders, validates, labels or marks
families asks this registry: the CLI and presets (``--families``), the planner, the
analyses, the report's figures, tables and summary. He et al. 2015 (arXiv 1512.03385)
compare two: plain nets and their residual twins. The later remedies for training deep
nets without (or beyond) BatchNorm follow: Fixup (Zhang, Dauphin & Ma 2019), ReZero
(Bachlechner et al. 2020), SkipInit (De & Smith 2020) and NF-ResNets (Brock, De & Smith
2021). A new family is one :func:`register` call here (its model lives in
``gradlab.models``, whose name grammar reads the family names from here).

This module imports nothing of torch or matplotlib: the report side uses it too.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Iterable

from gradlab.errors import ConfigError

__all__ = [
    "PAPER",
    "PLAIN",
    "RESNET",
    "Family",
    "check",
    "get",
    "is_known",
    "keyed",
    "label",
    "names",
    "ordered",
    "parse",
    "register",
    "sort_key",
]

PLAIN, RESNET = "plain", "resnet"
PAPER = (PLAIN, RESNET)  # He et al. 2015's comparison: the default wherever families are chosen


@dataclass(frozen=True)
class Family:
    """How one family is named and drawn.

    name: in model names, run names and spec.json ("resnet"); title: in labels ("ResNet",
    so "ResNet-56" as in the paper); panel_title: over a figure panel of the family's
    nets; residual: whether its blocks have identity shortcuts; marker, linestyle and
    filled: how its lines and points look in every figure (matplotlib names); with_depth:
    whether a label names the depth (a run of someone's own model is labelled by its name);
    archs: the zoo architectures that build the family (gradlab.models.registry.ARCHES);
    variant: the build options a run changed ("no norm, sigmoid"), named in its label.
    """

    name: str
    title: str
    panel_title: str
    residual: bool
    marker: str = "o"
    linestyle: str = "-"
    filled: bool = True
    with_depth: bool = True
    archs: tuple[str, ...] = ("cifar",)
    variant: str = ""

    def label(self, depth: int) -> str:
        """The model's label in figures and tables: "plain-20", "ResNet-56", "plain-56 (no norm)"."""
        label = f"{self.title}-{depth}" if self.with_depth else self.title
        return f"{label} ({self.variant})" if self.variant else label


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family (its position in the registry is its order in figures and tables)."""
    if family.name in _REGISTRY:
        raise ValueError(f"family {family.name!r} is registered already")
    _REGISTRY[family.name] = family
    return family


ALL_ARCHES = ("cifar", "preact", "imagenet", "seed")
# plain: open circles on dashed lines; ResNet: filled squares on solid lines; the remedies:
# filled markers of their own on dash-dotted or dotted lines
register(Family(PLAIN, "plain", "plain networks", residual=False, marker="o", linestyle="--", filled=False,
                archs=ALL_ARCHES))
register(Family(RESNET, "ResNet", "ResNets", residual=True, marker="s", linestyle="-", filled=True, archs=ALL_ARCHES))
register(Family("fixup", "Fixup", "Fixup ResNets (no BN)", residual=True, marker="D", linestyle="-."))
register(Family("rezero", "ReZero", "ReZero ResNets", residual=True, marker="^", linestyle=":"))
register(Family("skipinit", "SkipInit", "SkipInit ResNets (no BN)", residual=True, marker="v", linestyle="-."))
register(Family("nfresnet", "NF-ResNet", "NF-ResNets (no BN)", residual=True, marker="P", linestyle=":"))


def names() -> tuple[str, ...]:
    """Every family's name, in the registry's order (plain before ResNet, as in the paper)."""
    return tuple(_REGISTRY)


def is_known(name: str) -> bool:
    return name in _REGISTRY


# markers for names gradlab does not know, picked by the name so a run looks the same in every figure
_OTHER_MARKERS = ("^", "D", "v", "P", "X", "*", "<", ">")


def keyed(name: str, variant: str = "") -> str:
    """The key of a family with build options (``keyed("plain", "no norm")`` is
    "plain (no norm)"): runs that differ only in their options are told apart by it."""
    return f"{name} ({variant})" if variant else name


def get(name: str) -> Family:
    """The registered family; for a key with options ("plain (no norm, sigmoid)"), its
    family's look with the options named and a marker of its own; or a look for a name
    gradlab does not know (the name a user gave a run of their own model,
    gradlab.watch(run_dir=...)): labelled and titled by that name, a marker of its own."""
    family = _REGISTRY.get(name)
    if family is not None:
        return family
    name = str(name)
    marker = _OTHER_MARKERS[zlib.crc32(name.encode()) % len(_OTHER_MARKERS)]
    base, sep, variant = name.partition(" (")
    if sep and variant.endswith(")") and base in _REGISTRY:
        variant = variant[:-1]
        look = _REGISTRY[base]
        return replace(look, name=name, panel_title=f"{look.panel_title} ({variant})", marker=marker, variant=variant)
    return Family(name, name, name, residual=False, marker=marker, with_depth=False)


def label(name: str, depth: int) -> str:
    """Model labels as in He et al. 2015: "plain-20", "ResNet-56"."""
    return get(name).label(depth)


def ordered(present: Iterable[str]) -> list[str]:
    """The families in ``present`` (without repeats) in :func:`sort_key` order, those of
    equal rank in the order they came."""
    return sorted(dict.fromkeys(present), key=sort_key)


def sort_key(name: str) -> float:
    """Position of a family in tables and figures: registry order, a family with options
    right after its own, unknown names last."""
    order = list(_REGISTRY)
    base = str(name).partition(" (")[0]
    if name in _REGISTRY:
        return float(order.index(name))
    return order.index(base) + 0.5 if base in _REGISTRY else float(len(order))


def check(families: Iterable[str], what: str = "families") -> tuple[str, ...]:
    """Families as a tuple of registered names; a ConfigError naming the valid ones otherwise."""
    families = tuple(families)
    bad = [f for f in families if f not in _REGISTRY]
    if bad or not families:
        raise ConfigError(f"{what}: unknown {', '.join(map(str, bad)) or '(empty)'}; choose from {', '.join(names())}")
    return families


def parse(text: str, what: str = "--families") -> tuple[str, ...]:
    """'plain,resnet' -> ("plain", "resnet"), checked (see :func:`check`)."""
    return check((t.strip() for t in str(text).split(",") if t.strip()), what)
