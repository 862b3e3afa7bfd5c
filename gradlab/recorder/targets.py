"""What the recorder watches in a model: probe points, residual blocks, parameters.

Resolution rules:

* Wrappers are looked through: ``DistributedDataParallel``/``DataParallel`` (``.module``)
  and ``torch.compile``'s ``OptimizedModule`` (``._orig_mod``), in any nesting. All names
  are relative to the innermost module, so frames look the same whatever the wrapping;
  :func:`strip_prefixes` removes stray ``module.``/``_orig_mod.`` prefixes from names a
  caller passes in.
* If the model has ``probe_points()`` (every gradlab zoo model has), those are used as is.
* Otherwise the defaults are every Conv*/Linear (kind "conv"/"fc"), every BatchNorm (kind
  "bn") and every other norm layer (InstanceNorm*/LayerNorm/GroupNorm/RMSNorm, kind
  "norm"), and modules that are such layers by what they are, not by class (a weight
  matrix: "fc", like GPT-2's Conv1D; a per-feature weight that normalizes: "norm", like a
  hand-written RMSNorm: gradlab.recorder.kinds), numbered in registration order (``named_modules()``); the recorder renumbers
  them in the order the modules actually run, from its first recorded forward
  (gradlab.recorder.forward_order). A default point has ``relu_after=True`` when the next
  module of its ``nn.Sequential`` is an ``nn.ReLU`` (only such points get act_zero_frac: a
  ReLU applied as ``F.relu`` in forward is invisible here), and ``bn_next=True`` when it is
  a BatchNorm's (its output then goes to that BatchNorm only, which the recorder reads it
  from).
* Whatever its points came from, a point is followed by a saturating activation
  (``Targets.act_next``: "sigmoid" or "tanh", where act_sat_frac is recorded) when the next
  module of its ``nn.Sequential`` is an ``nn.Sigmoid`` or ``nn.Tanh``, or when the point says
  so (``ProbePoint.act_after``: the zoo's ``act="sigmoid"``/``"tanh"`` nets, which apply it as
  a function in forward). Another model's functional sigmoid is invisible here.
* ``include`` / ``exclude``: glob patterns (``fnmatch``) on module names choose which points
  are watched, and which modules' parameters: a point or parameter is kept when its module
  matches some ``include`` pattern (all, without one) and no ``exclude`` pattern. Each
  pattern that matches no point's or parameter's module is noted (``Targets.unmatched``).
* Residual blocks (for ``branch_ratio``) are the blocks named by probe points of kind
  "branch": ``x`` is the input of the module named ``point.block`` and ``F(x)`` the output
  of the branch point. Default targets have no blocks.
* Parameters (those with ``requires_grad``) belong to the probe point of their module; if
  their module is not a probe point, to the nearest enclosing probe point (e.g. a residual
  block's "block" point); if there is none, they get index -1 (until the forward order gives
  them their module's place) and a kind from their module's type ("conv"/"fc"/"bn"/"norm",
  or "other"); the modules of kind "other" are noted (``Targets.unclassified``).
* A parameter that several modules share (a tied embedding and classifier) is one target,
  under the first name ``named_parameters()`` gives, with its other names as ``aliases``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Iterable

import torch.nn as nn

from gradlab.errors import RecorderError
from gradlab.runs import WATCH_SOURCE
from gradlab.models.probe_points import BLOCK, BN, BRANCH, CONV, FC, ProbePoint
from gradlab.recorder.bn_stats import is_batchnorm
from gradlab.recorder.kinds import module_kind, unclassified

__all__ = [
    "BlockTarget",
    "ParamTarget",
    "Targets",
    "default_probe_points",
    "description",
    "resolve",
    "saturating_next",
    "strip_prefixes",
    "unwrap",
]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class ParamTarget:
    """One parameter tensor and the probe point that owns it."""

    name: str
    param: nn.Parameter
    index: int
    kind: str
    aliases: tuple[str, ...] = ()  # its other names, where modules share it (tied weights)


@dataclass(frozen=True)
class BlockTarget:
    """A residual block: ``x`` enters ``module``; ``F(x)`` leaves probe point ``branch``."""

    name: str
    module: nn.Module
    branch: int  # position of the branch point in Targets.points
    index: int  # the block's row index: its "block" point if any, else the branch point


@dataclass(frozen=True)
class Targets:
    inner: nn.Module
    points: list[ProbePoint]
    modules: list[nn.Module]  # modules[i] is the module of points[i]
    blocks: list[BlockTarget]
    params: list[ParamTarget]
    from_model: bool  # True when the points came from model.probe_points()
    act_next: dict[str, str] = field(default_factory=dict)  # point name -> "sigmoid" | "tanh" applied next
    unmatched: tuple[str, ...] = ()  # "include 'x.*'": patterns that chose nothing
    unclassified: tuple[str, ...] = ()  # "name (Class)": modules of kind "other"


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP/DataParallel and torch.compile wrappers (any nesting)."""
    seen = 0
    while seen < 16:
        seen += 1
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model
    return model


def strip_prefixes(name: str) -> str:
    """Remove leading ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                changed = True
    return name


def _selector(include: Iterable[str] | str | None, exclude: Iterable[str] | str | None):
    """A test on module names: some ``include`` pattern matches (any, without patterns) and
    no ``exclude`` pattern does."""
    inc = [include] if isinstance(include, str) else list(include or [])
    exc = [exclude] if isinstance(exclude, str) else list(exclude or [])
    for p in inc + exc:
        if not isinstance(p, str) or not p:
            raise RecorderError(f"include/exclude take glob patterns on module names such as 'encoder.*', not {p!r}.")
    return lambda name: (not inc or any(fnmatchcase(name, p) for p in inc)) and not any(
        fnmatchcase(name, p) for p in exc)


def default_probe_points(model: nn.Module) -> list[ProbePoint]:
    """Conv/Linear/norm layers of ``model`` in registration order (see module docstring)."""
    relu_next: set[str] = set()
    bn_next: set[str] = set()
    for parent_name, parent in model.named_modules():
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            for (name, _), (_, nxt) in zip(children, children[1:]):
                path = f"{parent_name}.{name}" if parent_name else name
                if isinstance(nxt, nn.ReLU):
                    relu_next.add(path)
                elif is_batchnorm(nxt):
                    bn_next.add(path)
    points = []
    for name, module in model.named_modules():
        kind = module_kind(module)
        if kind is not None:
            points.append(
                ProbePoint(name, len(points), kind, relu_after=name in relu_next, bn_next=kind != BN and name in bn_next)
            )
    return points


_SATURATING = ((nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh"))


def saturating_next(model: nn.Module) -> dict[str, str]:
    """Module name -> "sigmoid" | "tanh", for each child of an ``nn.Sequential`` whose next
    sibling is an ``nn.Sigmoid`` or ``nn.Tanh`` (its output is that activation's input)."""
    found = {}
    for parent_name, parent in model.named_modules():
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            for (name, _), (_, nxt) in zip(children, children[1:]):
                act = next((a for t, a in _SATURATING if isinstance(nxt, t)), None)
                if act is not None:
                    found[f"{parent_name}.{name}" if parent_name else name] = act
    return found


def _model_probe_points(inner: nn.Module) -> list[ProbePoint] | None:
    fn = getattr(inner, "probe_points", None)
    if not callable(fn):
        return None
    points = []
    for p in fn():
        if isinstance(p, dict):
            p = ProbePoint.from_dict(p)
        block = None if p.block is None else strip_prefixes(p.block)
        points.append(replace(p, name=strip_prefixes(p.name), block=block))
    return points


def resolve(model: nn.Module, include: Iterable[str] | str | None = None,
            exclude: Iterable[str] | str | None = None) -> Targets:
    """Probe points, blocks and parameters of ``model`` (wrappers looked through), those
    whose modules ``include`` and ``exclude`` select (see the module docstring)."""
    keep = _selector(include, exclude)
    inner = unwrap(model)
    named = dict(inner.named_modules())
    points = _model_probe_points(inner)
    from_model = points is not None
    if points is None:
        points = default_probe_points(inner)
    _check_points(inner, points, named)
    candidates = [p.name for p in points] + [n.rpartition(".")[0] for n, q in inner.named_parameters() if q.requires_grad]
    points = [p for p in points if keep(p.name)]
    modules = [named[p.name] for p in points]
    params, unowned = _params(inner, named, points, keep)
    if not points and not params and (include or exclude):
        names = [n for n, m in inner.named_modules() if n and module_kind(m)][:4]
        raise RecorderError(f"include={include!r} / exclude={exclude!r} leave nothing to watch in "
                            f"{type(inner).__name__}; patterns match module names such as {', '.join(names) or '(none)'}.")
    act_next = saturating_next(inner)
    act_next = {p.name: p.act_after or act_next[p.name] for p in points if p.act_after or p.name in act_next}
    return Targets(inner, points, modules, _blocks(points, named), params, from_model, act_next,
                   _unmatched(include, exclude, candidates), tuple(unclassified(inner, unowned)))  # fmt: skip


def _check_points(inner: nn.Module, points: list[ProbePoint], named: dict) -> None:
    missing = [p.name for p in points if p.name not in named]
    if missing:
        raise RecorderError(
            f"{type(inner).__name__}.probe_points() names modules that do not exist: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. "
            "Probe point names must be paths from model.named_modules()."
        )
    indices = [p.index for p in points]
    if len(set(indices)) != len(indices):
        raise RecorderError(f"{type(inner).__name__}.probe_points() has repeated indices; they must be unique.")


def _blocks(points: list[ProbePoint], named: dict) -> list[BlockTarget]:
    block_points = {p.block: p for p in points if p.kind == BLOCK and p.block is not None}
    blocks = []
    for i, p in enumerate(points):
        if p.kind != BRANCH or p.block is None:
            continue
        if p.block not in named:
            raise RecorderError(f"Branch point {p.name!r} names block {p.block!r}, which is not a module of the model.")
        owner = block_points.get(p.block)
        blocks.append(BlockTarget(p.block, named[p.block], i, owner.index if owner else p.index))
    return blocks


def _params(inner: nn.Module, named: dict, points: list[ProbePoint], keep) -> tuple[list[ParamTarget], list[str]]:
    """The kept parameters with their owners (their other names, if tied), and the modules
    of those no point owns."""
    aliases: dict[int, list[str]] = {}
    for pname, param in inner.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(strip_prefixes(pname))
    by_name = {p.name: p for p in points}
    params, unowned = [], []
    for pname, param in inner.named_parameters():
        path = pname.rpartition(".")[0]
        if not param.requires_grad or not keep(path):
            continue
        owner, probe = None, path
        while owner is None:
            owner = by_name.get(probe)
            if owner is not None and owner.kind == BRANCH:
                owner = None
            if owner is None and not probe:
                break
            probe = probe.rpartition(".")[0]
        if owner is not None:
            index, kind = owner.index, owner.kind
        else:
            index, kind = -1, module_kind(named.get(path, inner)) or "other"
            if kind == "other":
                unowned.append(path)
        name = strip_prefixes(pname)
        params.append(ParamTarget(name, param, index, kind, tuple(a for a in aliases[id(param)] if a != name)))
    return params, unowned


def _unmatched(include, exclude, names: list[str]) -> tuple[str, ...]:
    """"include 'x'" / "exclude 'y'" for each pattern that matches none of ``names``."""
    out = []
    for what, patterns in (("include", include), ("exclude", exclude)):
        for pattern in [patterns] if isinstance(patterns, str) else list(patterns or []):
            if not any(fnmatchcase(n, pattern) for n in names):
                out.append(f"{what} {pattern!r}")
    return tuple(out)


def description(name: str, targets: Targets) -> dict:
    """spec.json's ``model`` for a watched module: what the report needs to draw it along depth."""
    points = sorted(targets.points, key=lambda p: p.index)
    return {
        "name": name,
        "class": type(targets.inner).__name__,
        "family": name,
        "label": name,
        "depth": sum(1 for p in points if p.kind in (CONV, FC) and p.role == "main"),
        "params": sum(p.numel() for p in targets.inner.parameters() if p.requires_grad),
        "probe_points": [p.to_dict() for p in points],
        "parameters": [{"name": p.name, "index": p.index, "kind": p.kind, "shape": list(p.param.shape),
                        **({"aliases": list(p.aliases)} if p.aliases else {})} for p in targets.params],  # fmt: skip
        "source": WATCH_SOURCE,
    }
