"""The build options beyond a model's name: the classic failure modes and the regularizers.

    norm="none"        the net without BatchNorm (He init; convs get biases)
    act="tanh"|"sigmoid"  the main path's nonlinearity (the sigmoid's derivative is at most 1/4)
    drop_path=P        stochastic depth (Huang et al. 2016): block l of L dropped with
                       probability P * l / L in training, scaled by its survival in eval
    zero_init_residual each residual branch's last BN gamma set to 0 (Goyal et al. 2017)
    shortcut="B"|"C"   projection shortcuts (He et al. 2015 §3.3), CIFAR nets

One place says which family and architecture takes which option, checks them with a
message naming the fix, and names them in run names (``plain56-nonorm-sigmoid-s0``) and
labels ("plain-56 (no norm, sigmoid)"), so that two runs that differ only in an option never
share a directory and are told apart in every figure. Plain data, no torch.
"""

from __future__ import annotations

from gradlab import families
from gradlab.errors import ModelError

__all__ = ["ACTS", "DEFAULTS", "NORMS", "checked", "run_tags", "variant_text"]

NORMS = ("bn", "none")
ACTS = ("relu", "tanh", "sigmoid")
DEFAULTS = {"norm": "bn", "act": "relu", "drop_path": 0.0}


def checked(family: str, arch: str, name: str, norm: str = "bn", act: str = "relu", drop_path: float = 0.0,
            zero_init_residual: bool = False) -> dict:  # fmt: skip
    """The options that differ from the defaults, for a model of ``family`` and ``arch``
    called ``name``; a ModelError saying what to change for one it cannot take."""
    if norm not in NORMS:
        raise ModelError(f"norm must be one of {', '.join(NORMS)}, not {norm!r}")
    if act not in ACTS:
        raise ModelError(f"act must be one of {', '.join(ACTS)}, not {act!r}")
    if isinstance(drop_path, bool) or not isinstance(drop_path, (int, float)) or not 0 <= drop_path < 1:
        raise ModelError(f"drop_path must be a probability in [0, 1), such as 0.5; not {drop_path!r}")
    paper = family in families.PAPER
    if (norm != "bn" or act != "relu") and not (paper and arch == "cifar"):
        fixed = "" if paper else f" ({families.get(family).title} fixes its own normalization and uses ReLU)"
        raise ModelError(f"norm and act options exist for the CIFAR plain nets and ResNets only{fixed}; "
                         f"{name} cannot take norm={norm!r}, act={act!r}")  # fmt: skip
    if drop_path and (not families.get(family).residual or arch != "cifar"):
        raise ModelError(f"stochastic depth (drop_path) drops residual branches of CIFAR-layout nets; {name} "
                         f"has {'none' if not families.get(family).residual else 'another layout'}: leave it 0")
    if zero_init_residual and not paper:
        raise ModelError(f"{name} starts each residual branch at zero already; leave zero_init_residual off")
    given = {"norm": norm, "act": act, "drop_path": float(drop_path)}
    return {k: v for k, v in given.items() if v != DEFAULTS[k]}


def run_tags(norm: str = "bn", act: str = "relu", drop_path: float = 0.0) -> list[str]:
    """The parts a run name gets for non-default options: ["nonorm", "sigmoid", "dp0.5"]."""
    tags = []
    if norm != "bn":
        tags.append("nonorm")
    if act != "relu":
        tags.append(act)
    if drop_path:
        tags.append(f"dp{drop_path:g}")
    return tags


def variant_text(options: dict) -> str:
    """The options in a label: "no norm, sigmoid, drop-path 0.5, option B, zero-init"; "" for none."""
    parts = []
    if options.get("norm", "bn") != "bn":
        parts.append("no norm")
    if options.get("act", "relu") != "relu":
        parts.append(options["act"])
    if options.get("drop_path"):
        parts.append(f"drop-path {options['drop_path']:g}")
    if options.get("shortcut") not in (None, "A"):
        parts.append(f"option {options['shortcut']}")
    if options.get("zero_init_residual"):
        parts.append("zero-init")
    return ", ".join(parts)
