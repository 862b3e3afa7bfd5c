"""The families of networks gradlab compares at matched depth: the one place they are named.

A family is what a model name starts with (``plain56``, ``resnet56``) and what spec.json's
``model.family`` says. Everything that lists, orders, validates, labels or marks families
asks this registry: the CLI and presets (``--families``), the planner, the analyses, the
report's figures, tables and summary. He et al. 2015 (arXiv 1512.03385) compare two:
plain nets and their residual twins. A new family is one :func:`register` call here (its
model lives in ``gradlab.models``, whose name grammar reads the family names from here).

This module imports nothing of torch or matplotlib: the report side uses it too.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterable

from gradlab.errors import ConfigError

__all__ = [
    "PLAIN",
    "RESNET",
    "Family",
    "check",
    "get",
    "is_known",
    "label",
    "names",
    "ordered",
    "parse",
    "register",
    "sort_key",
]

PLAIN, RESNET = "plain", "resnet"


@dataclass(frozen=True)
class Family:
    """How one family is named and drawn.

    name: in model names, run names and spec.json ("resnet"); title: in labels ("ResNet",
    so "ResNet-56" as in the paper); panel_title: over a figure panel of the family's
    nets; residual: whether its blocks have identity shortcuts; marker, linestyle and
    filled: how its lines and points look in every figure (matplotlib names); with_depth:
    whether a label names the depth (a run of someone's own model is labelled by its name).
    """

    name: str
    title: str
    panel_title: str
    residual: bool
    marker: str = "o"
    linestyle: str = "-"
    filled: bool = True
    with_depth: bool = True

    def label(self, depth: int) -> str:
        """The model's label in figures and tables: "plain-20", "ResNet-56"."""
        return f"{self.title}-{depth}" if self.with_depth else self.title


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family (its position in the registry is its order in figures and tables)."""
    if family.name in _REGISTRY:
        raise ValueError(f"family {family.name!r} is registered already")
    _REGISTRY[family.name] = family
    return family


# plain: open circles on dashed lines; ResNet: filled squares on solid lines
register(Family(PLAIN, "plain", "plain networks", residual=False, marker="o", linestyle="--", filled=False))
register(Family(RESNET, "ResNet", "ResNets", residual=True, marker="s", linestyle="-", filled=True))


def names() -> tuple[str, ...]:
    """Every family's name, in the registry's order (plain before ResNet, as in the paper)."""
    return tuple(_REGISTRY)


def is_known(name: str) -> bool:
    return name in _REGISTRY


# markers for names gradlab does not know, picked by the name so a run looks the same in every figure
_OTHER_MARKERS = ("^", "D", "v", "P", "X", "*", "<", ">")


def get(name: str) -> Family:
    """The registered family, or a look for a name gradlab does not know (the name a user
    gave a run of their own model, gradlab.watch(run_dir=...)): labelled and titled by that
    name, a marker of its own, solid lines."""
    family = _REGISTRY.get(name)
    if family is None:
        name = str(name)
        marker = _OTHER_MARKERS[zlib.crc32(name.encode()) % len(_OTHER_MARKERS)]
        family = Family(name, name, name, residual=False, marker=marker, with_depth=False)
    return family


def label(name: str, depth: int) -> str:
    """Model labels as in He et al. 2015: "plain-20", "ResNet-56"."""
    return get(name).label(depth)


def ordered(present: Iterable[str]) -> list[str]:
    """The families in ``present`` (without repeats): registered ones in registry order,
    then any others in the order they came."""
    present = list(dict.fromkeys(present))
    return [f for f in _REGISTRY if f in present] + [f for f in present if f not in _REGISTRY]


def sort_key(name: str) -> int:
    """Position of a family in tables and figures (unknown families last)."""
    order = list(_REGISTRY)
    return order.index(name) if name in _REGISTRY else len(order)


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
