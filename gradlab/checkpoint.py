"""Checkpoints: tensors and plain Python only, so they load with weights_only=True."""

from __future__ import annotations

from pathlib import Path

import torch

from gradlab.errors import RunDirError
from gradlab.runs import atomic_write


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, device: torch.device) -> dict:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated zip, unpickling refusal, ...
        raise RunDirError(
            f"{path} cannot be read ({type(e).__name__}: {e}); delete it to restart the run from step 0"
        ) from e
