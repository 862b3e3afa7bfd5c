"""Depth order from the forward pass: the order in which a model's modules actually run.

Registration order (``named_modules()``) is the forward order of ``nn.Sequential``-style
models, not of others: in ``nn.TransformerEncoderLayer`` norm1 runs before linear1 but is
registered after linear2. For models without ``probe_points()`` the recorder watches its
first recorded forward with a pre-hook on every module (:class:`CallOrder`) and then numbers
the default probe points, and the parameters no point owns (an embedding, an attention's
``in_proj_weight``), by when their modules first ran (:func:`reindexed`). A module that was
never called as a module (``MultiheadAttention.out_proj``, whose weight is used directly)
is placed right after its nearest ancestor that ran, and named, so that its missing
activation statistics are explained.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from functools import partial

import torch.nn as nn

from gradlab.recorder.compiled import eager
from gradlab.recorder.targets import Targets

__all__ = ["CallOrder", "reindexed", "warn_never_called"]


class CallOrder:
    """Which modules of ``inner`` ran, in the order of their first call (while attached)."""

    def __init__(self, inner: nn.Module):
        self.inner = inner
        self.first: dict[str, int] = {}  # module name -> rank of its first call
        self._handles: list = []

    def watching(self, on: bool) -> None:
        """Attach the pre-hooks (for a recorded forward) or remove them."""
        if not on:
            self.detach()
        elif not self._handles:
            for name, module in self.inner.named_modules():
                self._handles.append(module.register_forward_pre_hook(partial(self._called, name)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @eager
    def _called(self, name: str, module: nn.Module, args) -> None:
        if name not in self.first:
            self.first[name] = len(self.first)


def reindexed(targets: Targets, first: dict[str, int]) -> tuple[Targets, list[str]]:
    """``targets`` with its points, and the parameters no point owns, numbered in the order
    their modules first ran; and the names of the points whose modules never ran."""
    registered = {name: i for i, (name, _) in enumerate(targets.inner.named_modules())}
    after_all = len(first) + 1

    def key(name: str) -> tuple[int, int, int]:
        ran = name
        while ran and ran not in first:
            ran = ran.rpartition(".")[0]
        if ran == name:
            return first[name], 0, 0
        # never called: right after the nearest ancestor that ran (the model itself: at the end)
        base = first[ran] if ran and ran in first else after_all
        return base, 1, registered.get(name, 0)

    points = {p.name for p in targets.points}
    unowned = {p.name.rpartition(".")[0] for p in targets.params if p.index < 0}
    order = sorted(points | unowned, key=key)
    rank = {name: i for i, name in enumerate(order)}
    new_index = {p.index: rank[p.name] for p in targets.points}
    new_points = [replace(p, index=rank[p.name]) for p in targets.points]
    new_params = [replace(p, index=rank[p.name.rpartition(".")[0]] if p.index < 0 else new_index[p.index])
                  for p in targets.params]  # fmt: skip
    never = [p.name for p in targets.points if p.name not in first]
    return replace(targets, points=new_points, params=new_params), never


def warn_never_called(never: list[str], points: int) -> None:
    """Say once which probe points did not run as modules (none of them ran: the recorder's
    warning about hooks that never fired says why)."""
    if never and len(never) < points:
        warnings.warn(
            f"gradlab: {', '.join(never[:5])}{' and others' if len(never) > 5 else ''} did not run as a "
            "module in the first recorded forward (the model uses its weights directly, as "
            "MultiheadAttention does with out_proj), so it has no activation statistics; its "
            "parameters are recorded.",
            RuntimeWarning,
            stacklevel=4,
        )
