"""What measures a watched model's recorded steps: its targets, their column layout, the
hooks, the parameter norms and the device buffers.

The Recorder (gradlab.recorder.recorder) owns one and decides when a step is recorded and
where the rows go; the instrument arms the hooks for a recorded forward, writes the step's
row on the device at ``step()`` and turns filled rows into frames at flush time.
"""

from __future__ import annotations

import warnings

import pandas as pd
import torch
import torch.nn as nn

from gradlab.errors import RecorderError
from gradlab.recorder import derive
from gradlab.recorder.buffer import HistogramBuffer, StepBuffer
from gradlab.recorder.forward_order import CallOrder, reindexed, warn_never_called
from gradlab.recorder.hooks import StepHooks
from gradlab.recorder.layout import Layout
from gradlab.recorder.misuse import warn_targets
from gradlab.recorder.params import ParamStats
from gradlab.recorder.ranks import RankCombiner
from gradlab.recorder.statistics import P_GRAD
from gradlab.recorder.targets import resolve

__all__ = ["Instrument"]


class Instrument:
    """The measuring parts of a recorder on ``model`` (options as in gradlab.watch)."""

    def __init__(self, model: nn.Module, stats: tuple[str, ...], stats_asked: bool, include, exclude,
                 act_sample: int | None, cpu_threads: int | None, reduce_at: str, buffer_steps: int,
                 histograms: bool, combine_ranks: bool):  # fmt: skip
        self.targets = t = resolve(model, include, exclude)
        warn_targets(t)
        self.layout = layout = Layout.build(t, stats, warn_unrecorded=stats_asked)
        dev = next((p.param.device for p in t.params), None)
        self.device = dev if dev is not None else next((b.device for b in t.inner.buffers()), torch.device("cpu"))
        # auto defers on CUDA only with a sample: copying whole activations would double their memory
        cuda = self.device.type == "cuda"
        defer = reduce_at if reduce_at != "auto" else "step" if cuda and act_sample else "mixed"
        self.hooks = StepHooks(t, layout, self.device, act_sample, cpu_threads, defer)
        self.reductions = self.hooks.reducer.name  # "hooks", "step" or "mixed"
        self.params = ParamStats(t.params, layout, self.device)
        self.buffer = StepBuffer(buffer_steps, layout.width, len(t.points), self.device)
        self.hist_buffer = HistogramBuffer(buffer_steps, len(t.params), self.device) if histograms else None
        self.order = None if t.from_model else CallOrder(t.inner)  # the depth order, from the first forward
        self.ranks: RankCombiner | None = None
        if combine_ranks:
            self.ranks = RankCombiner()
            self.ranks.set_columns([p.grad_col for p in layout.points if p.grad_col >= 0], self.device)
        self.nonfinite: dict | None = None  # the first non-finite value seen
        self._warned_no_outputs = False

    @property
    def keeps_rows(self) -> bool:
        """False on a data-parallel rank other than 0, which only measures."""
        return self.ranks is None or self.ranks.main

    @property
    def armed(self) -> bool:
        return self.hooks is not None and self.hooks.armed

    def arm(self, armed: bool) -> None:
        """Attach the hooks for a recorded forward, or remove them."""
        self.hooks.arm(armed)
        if self.order is not None:
            self.order.watching(armed)

    def settle_order(self) -> bool:
        """After the first recorded forward of a model without probe_points(): number the points
        in the order their modules ran. True when that changed the targets (tell the run directory)."""
        if self.order is None or not self.order.first:
            return False
        self.order.detach()
        first, self.order = self.order.first, None
        self.targets, never = reindexed(self.targets, first)
        self.layout.rekey(self.targets)
        warn_never_called(never, len(self.targets.points))
        return True

    def record(self, step: int, outputs: bool) -> bool:
        """Write the row of recorded step ``step`` on the device (``outputs``: its forward ran
        with the hooks attached); True when the buffer is full and wants a flush."""
        params = self.targets.params
        if params and params[0].param.device != self.device:
            raise RecorderError(
                f"The model moved from {self.device} to {params[0].param.device} after watch(); "
                "move it to its device first, then call gradlab.watch(model)."
            )
        hooks, buffer, layout = self.hooks, self.buffer, self.layout
        if not outputs:  # stray values of a forward that ran unarmed (none are expected)
            hooks.clear()
        written, row = buffer.written[buffer.count], buffer.row()
        with torch.no_grad():  # (reductions of what the step left: no autograd bookkeeping per op)
            hooks.write(row, written)
            self.params.write(row, written)
        if self.ranks is not None:
            self.ranks.combine(row)
        if outputs and not self._warned_no_outputs and layout.params.get(P_GRAD):
            output_cols, param_grad = layout.output_cols, layout.params[P_GRAD]
            if output_cols.size and not written[output_cols].any() and written[param_grad].any():
                self._warned_no_outputs = True
                warnings.warn(
                    f"gradlab: step {step} was recorded with hooks attached, but no probe point "
                    "produced output statistics (only parameter statistics were recorded). "
                    "Does the model's forward bypass its modules' __call__ (e.g. "
                    "F.linear(x, layer.weight) instead of layer(x)), or run compiled code "
                    "that skips module hooks?",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return buffer.commit(step, hooks.numel)

    def record_histograms(self, step: int) -> bool:
        """Gradient histograms of step ``step``; True when their buffer is full."""
        grads = [p.param.grad for p in self.targets.params]
        grads = [g if g is not None and g.layout == torch.strided else None for g in grads]
        return any(g is not None for g in grads) and self.hist_buffer.add(step, grads)

    def drain(self) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """The rows of the buffered steps (copied to the host: the recorder's only sync) and
        their histograms; notes the first non-finite value among them."""
        new = derive.empty_frame()
        drained = self.buffer.drain()
        if drained is not None and self.keeps_rows:
            raw, written, numel, steps = drained
            new = derive.frame(self.layout, raw, written, numel, steps)
            if self.nonfinite is None:
                self.nonfinite = derive.first_nonfinite(self.layout, raw, written, steps)
        hist = self.hist_buffer.drain() if self.hist_buffer is not None else None
        return new, None if hist is None else derive.hist_frame(self.layout, *hist)

    def state(self) -> dict:
        """What a checkpoint keeps: the parameters' names, their previous weights, the first
        non-finite value."""
        return {"param_names": [p.name for p in self.targets.params], "prev_weights": self.params.state(),
                "nonfinite": None if self.nonfinite is None else dict(self.nonfinite)}  # fmt: skip

    def load_state(self, state: dict) -> None:
        if list(state["param_names"]) != [p.name for p in self.targets.params]:
            raise RecorderError(
                "Recorder state was saved for a model with different parameters; "
                "resume with the same model architecture."
            )
        self.params.load(state.get("prev_weights"))
        nf = state.get("nonfinite")
        self.nonfinite = None if nf is None else dict(nf)

    def close(self) -> None:
        """Remove every hook and let go of the tensors held (the recorder stopped)."""
        self.arm(False)
        self.hooks.clear()
        self.hooks = None  # its scratch buffers and references to the model's tensors
        self.params.prev = None

    def detach(self) -> None:
        """Remove every hook (a recorder dropped without stop())."""
        if self.hooks is not None:
            self.hooks.arm(False)
        if self.order is not None:
            self.order.detach()
