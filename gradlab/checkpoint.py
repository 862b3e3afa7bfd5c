"""Checkpoints: tensors and plain Python only, so they load with weights_only=True."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from gradlab.errors import RunDirError
from gradlab.file_io import atomic_write
from gradlab.runs import CHECKPOINT

log = logging.getLogger(__name__)


def save_checkpoint(path: Path, state: dict) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:  # closed even when the disk fills, so its space comes back
            out = _WriteErrors(f)
            try:
                torch.save(state, out)
            except Exception:
                if out.error is not None:  # torch reports a failed write as a RuntimeError
                    raise out.error from None
                raise

    atomic_write(path, write)


class _WriteErrors:
    """A binary file for torch.save that keeps the first OSError of a write (a full disk),
    which torch's zip writer would otherwise turn into an opaque RuntimeError."""

    def __init__(self, f):
        self.f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def load_checkpoint(path: Path, device: torch.device) -> dict:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated zip, unpickling refusal, ...
        raise RunDirError(f"{path} cannot be read ({type(e).__name__}: {_why(e)}); the file is damaged") from e


def _why(error: Exception) -> str:
    """torch's reason in one line, without its advice to load with weights_only=False, which
    would run whatever code a damaged or foreign file holds."""
    text = str(error)
    if "weights_only" in text or "Weights only load failed" in text:
        return "it holds objects other than tensors and plain values, so it is not a checkpoint gradlab wrote"
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def archived(run_dir: Path) -> list[Path]:
    """Older checkpoints kept beside checkpoint.pt, oldest first."""
    return sorted(Path(run_dir).glob("checkpoint-*.pt"))


def rotate(run_dir: Path, previous_step: int | None, keep: int) -> None:
    """Before a new checkpoint.pt: keep the current one as checkpoint-<step>.pt, prune to `keep` in all."""
    current = Path(run_dir) / CHECKPOINT
    if keep > 1 and previous_step is not None and current.exists():
        os.replace(current, Path(run_dir) / f"checkpoint-{previous_step:08d}.pt")
    for old in archived(run_dir)[: max(0, len(archived(run_dir)) - (keep - 1))]:
        old.unlink()


def load_latest(run_dir: Path, device: torch.device) -> dict | None:
    """checkpoint.pt, or the newest older one if it is damaged; None if there is none."""
    candidates = [Path(run_dir) / CHECKPOINT] + archived(run_dir)[::-1]
    candidates = [p for p in candidates if p.exists()]
    for i, path in enumerate(candidates):
        try:
            return load_checkpoint(path, device)
        except RunDirError as e:
            if i + 1 == len(candidates):
                every = "it" if len(candidates) == 1 else f"all {len(candidates)} checkpoints"
                raise RunDirError(f"{e}; to restart the run from step 0, delete {every} in {run_dir}") from e
            log.warning("warning: %s; resuming from the older %s instead", e, candidates[i + 1].name)
    return None
