"""A module's forward wrapped to call the recorder's hooks, in place of module hooks.

A module with any forward hook leaves ``nn.Module.__call__``'s fast path: PyTorch then
gathers its hooks and global hooks in Python at every call, about 9 µs a module on this
project's CPU (reports/recorder-overhead.md, 2026-12-07). A recorded step of a small
network calls a hundred such modules, so the recorder wraps each watched module's
``forward`` instead (an instance attribute, removed when the step's hooks come off): the
call stays on the fast path and pays one Python call. The hooks keep their signatures
(``pre(module, args)``, ``post(module, args, output)``) and, like the recorder's, never
replace what they see. Unlike a module hook, a wrapped forward also sees a call of
``module.forward(...)`` made directly, and it runs before the hooks others registered on
the module (which may still replace its output after it).
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ForwardWrap", "attach", "wrap_forward"]


class ForwardWrap:
    """The handle of a wrapped forward: ``remove()`` puts the module's own forward back."""

    __slots__ = ("module", "wrapper", "own")

    def __init__(self, module: nn.Module, wrapper, own):
        self.module, self.wrapper, self.own = module, wrapper, own

    def remove(self) -> None:
        d = self.module.__dict__
        if d.get("forward") is not self.wrapper:  # someone wrapped it again since: leave theirs in place
            return
        if self.own is None:
            del d["forward"]
        else:
            d["forward"] = self.own


def wrap_forward(module: nn.Module, pres=(), posts=()) -> ForwardWrap:
    """Wrap ``module.forward`` to call each of ``pres`` as ``pre(module, args)`` before it and
    each of ``posts`` as ``post(module, args, output)`` after it; returns the handle that
    unwraps it."""
    own = module.__dict__.get("forward")  # a forward the user set on the instance, kept
    inner, pres, posts = module.forward, tuple(pres), tuple(posts)

    if not pres and len(posts) == 1:  # (a probe point's one hook, the usual case: no loops around it)
        (post,) = posts

        def forward(*args, **kwargs):
            output = inner(*args, **kwargs)
            post(module, args, output)
            return output
    else:

        def forward(*args, **kwargs):
            for pre in pres:
                pre(module, args)
            output = inner(*args, **kwargs)
            for post in posts:
                post(module, args, output)
            return output

    module.__dict__["forward"] = forward
    return ForwardWrap(module, forward, own)


def attach(hooks) -> list:
    """Attach ``hooks``, (module, pre-hook or None, hook or None) each, a wrapped forward per
    module; returns the handles. A module whose forward cannot be set (a ScriptModule) gets
    module hooks instead."""
    by_module: dict[int, tuple[nn.Module, list, list]] = {}
    for module, pre, post in hooks:
        _, pres, posts = by_module.setdefault(id(module), (module, [], []))
        if pre is not None:
            pres.append(pre)
        if post is not None:
            posts.append(post)
    handles = []
    for module, pres, posts in by_module.values():
        if not isinstance(module, torch.jit.ScriptModule):
            handles.append(wrap_forward(module, pres, posts))
        else:
            handles += [module.register_forward_pre_hook(h) for h in pres]
            handles += [module.register_forward_hook(h) for h in posts]
    return handles
