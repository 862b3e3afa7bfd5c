"""What the hooks know of each probe point and of each output tensor they see, and the small
helpers they share (the activation sample, a scratch buffer, a thread limit).

gradlab.recorder.hooks attaches the hooks; a Tap is a point as they see it, a SeenOutput
what was taken of one tensor in one forward (shared by the points that see it).
"""

from __future__ import annotations

import weakref

import torch

from gradlab.recorder.compiled import eager
from gradlab.recorder.layout import PointColumns
from gradlab.recorder.statistics import NORM, SUM

__all__ = ["FlatScratch", "Sample", "SeenOutput", "SeenOutputs", "Tap", "output_tensor", "taps_of", "with_threads"]


def with_threads(fn, limit: int):
    """``fn`` run with at most ``limit`` intra-op threads (the setting restored after)."""

    @eager
    def limited(*args):
        n = torch.get_num_threads()
        if n <= limit:
            return fn(*args)
        torch.set_num_threads(limit)
        try:
            return fn(*args)
        finally:
            torch.set_num_threads(n)

    return limited


class SeenOutput:
    """What was taken of one output tensor during one forward, shared by the points that see
    it (a BN output and the ``branch_out`` point after it, a block output and the next
    block's input are reduced once)."""

    __slots__ = ("ref", "version", "values", "grad_cols", "sample", "derived", "saved", "uses")

    def __init__(self, h: torch.Tensor):
        self.ref = weakref.ref(h)
        self.version = h._version
        self.values: dict = {}  # reduction -> its value (reduced in the hooks)
        self.sample: int | None = None  # deferred reductions: its sample's number
        self.grad_cols: list[int] | None = None
        self.derived = None  # a BatchNorm output: its key in BNStats, whose sum and norm it gets
        self.saved = None  # a BatchNorm output: the statistics its backward node saved (False: none)
        self.uses = 0  # the points and blocks that took it


class SeenOutputs(dict):
    """The outputs seen during one forward, by ``id``: :meth:`entry` gives an output's
    SeenOutput (a new one for a tensor that reuses a freed one's id, or was changed in place
    since) and counts the point or block that takes it."""

    taken = None  # (h, e) -> fill e with what a lean hook took of h (gradlab.recorder.fused_taps)

    def entry(self, h: torch.Tensor) -> SeenOutput:
        e = self.get(id(h))
        if e is None or e.ref() is not h or e.version != h._version:
            e = self[id(h)] = SeenOutput(h)
            if self.taken is not None:
                self.taken(h, e)
        e.uses += 1
        return e


class Tap:
    """A probe point as the hooks see it: the columns it fills, and whether the BatchNorm after
    it measures it (a pairing checked on the first recorded step, dissolved if the forward
    routes the output elsewhere)."""

    __slots__ = ("position", "is_bn", "channel_first", "reductions", "from_bn", "on_tensor", "bn_cols", "grad_col",
                 "active", "fed", "feeder", "checked", "fast")  # fmt: skip

    def __init__(self, cols: PointColumns):
        self.position = cols.position  # in Targets.points and Targets.modules
        self.is_bn = cols.is_bn
        self.channel_first = cols.channel_first
        self.reductions = cols.reductions  # (reduction, column) of its output
        self.from_bn = tuple(rc for rc in cols.reductions if rc[0].from_batchnorm)  # a BatchNorm can give these
        self.on_tensor = tuple(rc for rc in cols.reductions if not rc[0].from_batchnorm)
        self.bn_cols = (cols.col(SUM), cols.col(NORM))  # (sum, norm) columns; -1: none
        self.grad_col = cols.grad_col
        self.active = bool(cols.reductions) or cols.grad_col >= 0
        self.fed = cols.fed  # its output goes only to the next point, a BatchNorm, whose hooks measure it
        self.feeder: Tap | None = None  # (on that BatchNorm's tap) the tap it measures
        self.checked = False  # a recorded step saw the BatchNorm's input be this point's output
        self.fast = None  # a FastPlan: it takes the lean hook (gradlab.recorder.fast_taps)

    @property
    def plain(self) -> bool:
        """Measured on its own output alone: no BatchNorm statistics and no fed point involved."""
        return self.feeder is None and not self.is_bn and not self.fed

    @property
    def hooked(self) -> bool:
        """Whether this point's module gets a measuring forward hook (for itself or its feeder)."""
        return not self.fed and (self.active or (self.feeder is not None and self.feeder.active))


def taps_of(points: list[PointColumns]) -> list[Tap]:
    """The points' taps, each BatchNorm's linked to the point it measures (its ``feeder``)."""
    taps = [Tap(cols) for cols in points]
    for tap, after in zip(taps, taps[1:]):
        if tap.fed:
            after.feeder = tap
    return taps


def output_tensor(output) -> torch.Tensor | None:
    """The floating-point dense tensor a module returned (the first one of a tuple), or None."""
    h = output
    if not isinstance(h, torch.Tensor):
        h = next((o for o in h if isinstance(o, torch.Tensor)), None) if isinstance(h, (tuple, list)) else None
    return h if h is not None and h.is_floating_point() and not h.is_sparse else None


class Sample:
    """The first ``act_sample`` examples of a batch (None: all): activation statistics and
    branch ratios are estimated on them; gradients always use the whole batch."""

    def __init__(self, act_sample: int | None):
        self.act_sample = act_sample

    def size(self, d: torch.Tensor) -> int | None:
        """How many leading examples of ``d`` the activation statistics use (None: all)."""
        n = self.act_sample
        return n if n and d.dim() > 1 and d.shape[0] > n else None

    def view(self, d: torch.Tensor) -> torch.Tensor:
        n = self.size(d)
        return d if n is None else d.narrow(0, 0, n)

    def numel(self, d: torch.Tensor) -> int:
        n = self.size(d)
        return d.numel() if n is None else d.numel() // d.shape[0] * n


class FlatScratch:
    """``scratch(h)``: a reused 1-D buffer of h's numel, dtype and device, for an elementwise
    pass of a reduction (views kept: no op per call)."""

    def __init__(self):
        self.buffers: dict[tuple, torch.Tensor] = {}

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        n = h.numel()
        view = self.buffers.get((h.dtype, h.device, n))
        if view is None:
            key = (h.dtype, h.device)
            buf = self.buffers.get(key)
            if buf is None or buf.numel() < n:
                self.buffers = {k: v for k, v in self.buffers.items() if k[:2] != key}  # views of the old one
                buf = self.buffers[key] = torch.empty(n, dtype=h.dtype, device=h.device)
            view = self.buffers[(h.dtype, h.device, n)] = buf[:n]
        return view
