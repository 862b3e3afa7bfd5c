"""Recorded steps of a torch.compile'd model run eagerly; the others stay compiled.

Compiled code and the recorder's hooks do not mix: compiled code skips module hooks added
after it was traced (a recorded step would then have no activation statistics), and a graph
traced with hooks breaks at every probe point. So while a recorder's hooks are attached
(recorded steps only: gradlab.recorder.schedule), ``torch.compile`` is told to run
everything eagerly (``torch.compiler.set_stance("force_eager")``, PyTorch 2.6 and later),
and its stance before is restored when the hooks come off: compiled code is traced and
run with no hook in sight, and never recompiles for them. Other compiled functions of the
process run eagerly on recorded steps too.

With a PyTorch that has no stances, hooks are instead wrapped in ``torch.compiler.disable``
(``eager``), which costs a call through Dynamo's frame hook each time a hook runs.
"""

from __future__ import annotations

import torch

__all__ = ["STANCES", "eager", "eager_while_armed"]

STANCES = hasattr(getattr(torch, "compiler", None), "set_stance")
_armed = 0  # recorders with hooks attached now, in this process
_saved = None  # the stance before the first of them


def eager(fn):
    """A hook as registered: as it is where stances keep compiled code away from hooks, else
    run eagerly under torch.compile (Dynamo would otherwise compile the hook's own frame and
    recompile it for every new output tensor)."""
    if STANCES:
        return fn
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    return disable(fn) if disable is not None else fn


def eager_while_armed(armed: bool) -> None:
    """A recorder attached (True) or removed (False) its hooks: compiled code runs eagerly
    while any recorder's hooks are attached."""
    global _armed, _saved
    if not STANCES:
        return
    from torch._dynamo import eval_frame

    if armed:
        _armed += 1
        if _armed == 1:
            _saved = eval_frame._stance
            torch.compiler.set_stance("force_eager")
    elif _armed > 0:
        _armed -= 1
        if _armed == 0 and _saved is not None:
            saved, _saved = _saved, None
            torch.compiler.set_stance(saved.stance, skip_guard_eval_unsafe=saved.skip_guard_eval_unsafe,
                                      force_backend=saved.backend)  # fmt: skip
