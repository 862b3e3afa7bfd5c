"""What a trainer checkpoint holds: saved and restored here, side by side.

A checkpoint is tensors and plain Python (gradlab.checkpoint loads it with
weights_only=True): the step, the training time so far, the model, optimizer and lr
schedule, the running loss/error sums since the last evaluation, the recorder's state
(its previous weights, for update_norm) and, on a CPU, the thread count (CPU sums round
by thread count, so a resume at another count is not bit-exact; it says so).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from gradlab import runs
from gradlab.checkpoint import load_latest, rotate, save_checkpoint
from gradlab.distributed import World
from gradlab.train.parts import RunParts
from gradlab.train.sums import RunningSums

__all__ = ["restore", "save"]

log = logging.getLogger(__name__)


def save(run_dir: Path, step: int, time_s: float, parts: RunParts, sums: dict[str, torch.Tensor],
         recorder, cuda: bool, previous: int | None, keep: int) -> None:
    """Write checkpoint.pt for ``step`` (``sums``: RunningSums.to_save; the checkpoint of
    step ``previous`` is kept beside it, ``keep`` in all)."""
    state = {
        "format_version": runs.FORMAT_VERSION,
        "step": step,
        "time_s": time_s,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "lr": parts.lr.state_dict(),
        "acc": sums,
    }
    if not cuda:
        state["threads"] = torch.get_num_threads()
    if recorder is not None:
        state["recorder"] = recorder.state_dict()
    rotate(run_dir, previous, keep)
    save_checkpoint(run_dir / runs.CHECKPOINT, state)


def restore(run_dir: Path, name: str, device: torch.device, world: World, parts: RunParts,
            sums: RunningSums, recorder) -> tuple[int, float]:
    """Load the latest checkpoint into the parts, the running sums (rank 0's; the other
    ranks start from zero) and the recorder; returns (step, training seconds), (0, 0.0)
    without one."""
    state = load_latest(run_dir, device)  # every rank reads the same file
    world.check_same(-1 if state is None else int(state["step"]), "the step to resume from")
    if state is None:
        return 0, 0.0
    step = int(state["step"])
    threads = state.get("threads")
    if threads is not None and device.type != "cuda" and threads != torch.get_num_threads() and world.main:
        log.warning("warning: %s was checkpointed at step %d with %d CPU thread(s) and resumes with %d: CPU "
                    "sums then round differently, so it will not match an uninterrupted run exactly; resume "
                    "with OMP_NUM_THREADS=%d for that", name, step, threads, torch.get_num_threads(), threads)
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.lr.load_state_dict(state["lr"])
    if world.main:
        sums.load(state["acc"])
    if recorder is not None and "recorder" in state:
        recorder.load_state_dict(state["recorder"])
    return step, float(state["time_s"])
