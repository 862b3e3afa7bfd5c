"""Recipe keys as the planner and the report both name them (no torch, no model code).

Bookkeeping keys change what a run writes, not what it trains: a sweep cannot vary them
and the report does not tell runs apart by them. Short names make run names and labels
readable ("fixup20-lr0.1-s0", "Fixup-20 (lr 0.1)").
"""

from __future__ import annotations

BOOKKEEPING = ("eval_every", "checkpoint_every", "keep_checkpoints", "record", "record_every")
SHORT = {"weight_decay": "wd", "batch_size": "bs", "warmup_lr": "warmup", "momentum": "mom"}
# data settings that change what is trained (the folder it is read from does not)
DATA_KEYS = ("name", "val_split", "augment", "synthetic_shape", "synthetic_size", "num_classes", "image_size")


def short(key: str) -> str:
    """The short name of a recipe key ("wd" for weight_decay; the key itself otherwise)."""
    return SHORT.get(key, key)


def shown(value) -> str:
    """A setting's value as labels show it: 0.1, 64, 150/225, true."""
    if isinstance(value, (tuple, list)):
        return "/".join(shown(v) for v in value) or "none"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)
