"""Ways a model or a loop can give the recorder wrong numbers without an error, each named
once, in one line that says what happened and what to do (issue #29).

When watching starts (:func:`warn_targets`): include/exclude patterns that match nothing,
modules gradlab cannot classify, parameters shared by several modules (tied). At
``step()`` and at flush (:class:`StepChecks`): a recorded step without gradients (the
gradients were zeroed before ``step()``), step numbers that do not increase (an epoch, or
``step(n)`` inside a gradient-accumulation loop), and weights that do not change between
consecutive steps (``step()`` more than once per optimizer step).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from gradlab import stat_names as S

__all__ = ["StepChecks", "warn_targets"]

_FIX_ORDER = "call rec.step() once per optimizer step, after loss.backward() and before optimizer.zero_grad()"


def _say(text: str, stacklevel: int = 4) -> None:
    warnings.warn(f"gradlab: {text}", RuntimeWarning, stacklevel=stacklevel)


def _listed(items, most: int = 4) -> str:
    items = list(items)
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def warn_targets(targets) -> None:
    """Say what watching ``targets`` leaves out or merges (see the module docstring)."""
    model = type(targets.inner).__name__
    if targets.unmatched:
        one = len(targets.unmatched) == 1
        _say(f"{_listed(targets.unmatched)} {'matches' if one else 'match'} no layer of {model} and "
             f"{'chooses' if one else 'choose'} nothing; fix {'it' if one else 'them'}: patterns match whole module "
             "names as model.named_modules() gives them (fnmatch: 'encoder.*' for the layers inside encoder).", 6)  # fmt: skip
    if targets.unclassified:
        _say(f"{_listed(targets.unclassified)} hold parameters but are no layer gradlab knows (conv, linear, norm): "
             "their parameters are recorded (kind 'other'), their outputs are not; give the model probe_points() "
             "to watch them.", 6)  # fmt: skip
    tied = [p for p in targets.params if p.aliases]
    if tied:
        shared = _listed(f"{p.name} = {', '.join(p.aliases)}" for p in tied)
        _say(f"{shared}: one tensor under several names (tied), recorded once under the first name; spec.json lists "
             "every name (parameters[].aliases).", 6)  # fmt: skip


class StepChecks:
    """The step-time checks of one recorder; each warns once."""

    def __init__(self):
        self.said: set[str] = set()
        self.last_number: int | None = None  # the number given to the previous step()
        self.last_recorded = -1  # the last recorded step of the previous flush
        self.still = 0  # recorded steps that followed the previous one with no weight changed

    def restart(self, step: int) -> None:
        """The recorder's counter was set to ``step`` (set_step): the next number is that."""
        self.last_number = step - 1

    def stepped(self, number: int, recorded: bool, params) -> None:
        """``step(number)`` was called; ``recorded``: its gradients are to be recorded."""
        if self.last_number is not None and number <= self.last_number and "order" not in self.said:
            self.said.add("order")
            again = "again" if number == self.last_number else "after a later one"
            _say(f"rec.step({number}) came {again} (rec.step({self.last_number}) before it): the rows of one step "
                 "are stored more than once or out of order; pass the optimizer step's number, not the epoch's, "
                 f"or none, and {_FIX_ORDER}.")  # fmt: skip
        self.last_number = number
        if recorded and params and "grads" not in self.said and all(p.param.grad is None for p in params):
            self.said.add("grads")
            _say(f"step {number} was recorded, but no parameter has a gradient (zeroed before rec.step()?): "
                 f"{_FIX_ORDER}.")  # fmt: skip

    def flushed(self, rows: pd.DataFrame) -> None:
        """Check the rows a flush derived (zeroed gradients, weights that did not move)."""
        if not len(rows) or {"zeros", "still"} <= self.said:
            return
        stat = rows["stat"]
        grad_moved, grad_finite = _per_step(rows[stat == S.GRAD_NORM])
        act_moved, _ = _per_step(rows[stat == S.ACT_GRAD_NORM])
        moved, _ = _per_step(rows[stat == S.UPDATE_NORM])
        for step in np.sort(rows["step"].unique()):
            if step in grad_moved and not grad_moved[step] and act_moved.get(step, True) and "zeros" not in self.said:
                self.said.add("zeros")
                _say(f"every parameter's gradient was exactly zero at step {step}, though gradients reached the "
                     f"activations (zero_grad() before rec.step()?): {_FIX_ORDER}.", 5)  # fmt: skip
            # no weight moved since the recorded step right before (a GradScaler's skipped steps,
            # with non-finite gradients, do not move either)
            if step == self.last_recorded + 1 and moved.get(step, True) is False and grad_finite.get(step, True):
                self._still(step)
            self.last_recorded = int(step)

    def _still(self, step: int) -> None:
        """A recorded step right after another at which no weight changed; name the second."""
        self.still += 1
        if self.still >= 2 and "still" not in self.said:  # one (a warm-up from lr 0) is no pattern
            self.said.add("still")
            _say(f"no weight changed between steps {step - 1} and {step}, nor at an earlier step: rec.step() runs "
                 "more than once per optimizer step (in a gradient-accumulation loop: once, after the last "
                 "micro-batch's backward), or the optimizer does not step.", 6)  # fmt: skip


def _per_step(frame: pd.DataFrame) -> tuple[dict, dict]:
    """{step: whether some value is non-zero (NaN counts)}, {step: whether all are finite}."""
    if not len(frame):
        return {}, {}
    values = frame["value"].to_numpy()
    nonzero = pd.Series(values != 0).groupby(frame["step"].to_numpy()).any()
    finite = pd.Series(np.isfinite(values)).groupby(frame["step"].to_numpy()).all()
    return {int(k): bool(v) for k, v in nonzero.items()}, {int(k): bool(v) for k, v in finite.items()}
