"""Module outputs kept with their gradients, for known answers to the recorder's statistics."""

from __future__ import annotations


def capture(model, names):
    """Forward hooks keeping the outputs of the modules ``names`` (gradients retained):
    returns the dict they fill (name -> output) and the hook handles to remove."""
    kept = {}
    mods = dict(model.named_modules())

    def keep(name):
        def hook(module, args, out):
            out.retain_grad()
            kept[name] = out

        return hook

    handles = [mods[n].register_forward_hook(keep(n)) for n in names]
    return kept, handles
