"""Probe points whose module runs more than once in one forward (a layer applied twice, a
shared block): their calls are never mixed.

A module's forward hook sees each call's output, and its gradient hook each call's
gradient, so one column per point would hold one call's activation statistics and another
call's ||dL/dh|| (the forward runs the calls in one order, the backward in the other).
The first recorded step counts each point's calls: with several forwards a step (gradient
accumulation) every point runs as often as the forwards; a point that runs more often than
most ran more than once within a forward. Its activation and dL/dh columns are then not
recorded (from that step on, that step included), its parameters still are, and one
warning names the module and what the user can do. A module that repeats only on some
later steps is not seen (docs/recorder.md).
"""

from __future__ import annotations

import warnings
from collections import Counter

from gradlab.recorder.taps import Tap

__all__ = ["RepeatedCalls"]


class RepeatedCalls:
    """Counts the calls of each point during the first recorded step and, at its end, stops
    measuring the points called more often than most (``names``: a point's module name)."""

    def __init__(self, taps: list[Tap], names: list[str]):
        self.taps, self.names = taps, names
        self.counting = True
        self.calls = [0] * len(taps)
        self.masked: list[int] = []  # columns never written again

    def judge(self) -> bool:
        """At the end of the first recorded step: True if a point was found repeated (its
        hooks must come off)."""
        self.counting = False
        ran = [c for c in self.calls if c]
        if not ran:
            self.counting = True  # the forward ran unarmed: count on the next recorded step
            return False
        usual = Counter(ran).most_common(1)[0][0]
        repeated = [t for t, c in zip(self.taps, self.calls) if c > usual]
        for tap in repeated:
            for t in (tap, tap.feeder) if tap.feeder is not None else (tap,):  # (a conv a BatchNorm measures)
                self.masked += [col for _, col in t.reductions] + ([t.grad_col] if t.grad_col >= 0 else [])
                t.reductions = t.on_tensor = t.from_bn = ()
                t.grad_col, t.active, t.fast = -1, False, None
        if repeated:
            times = {self.names[t.position]: self.calls[t.position] // usual for t in repeated}
            listed = ", ".join(f"{name} ({n} times)" for name, n in list(times.items())[:4])
            more = f" and {len(times) - 4} more" if len(times) > 4 else ""
            warnings.warn(f"gradlab: {listed}{more} ran more than once in one forward, so its activation and "
                          "dL/dh statistics would mix its calls: they are not recorded for it (its parameters "
                          "are). Give each call its own module to see them, or exclude it to silence this.",
                          RuntimeWarning, stacklevel=5)  # fmt: skip
        return bool(repeated)
