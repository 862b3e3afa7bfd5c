"""The running training loss and error between evaluations, kept on the device.

Each step adds its batch's summed loss, its wrong predictions and its size, and notes the
first step whose loss was not finite, without waiting for the device; an evaluation reads
the sums (over all ranks, data-parallel) and starts them again. A checkpoint holds them,
so a run resumed between evaluations logs what an uninterrupted one would.
"""

from __future__ import annotations

import torch

from gradlab.distributed import World

__all__ = ["RunningSums"]


class RunningSums:
    """loss_sum, err_sum, count and bad_step (the first non-finite step, -1: none)."""

    def __init__(self, device: torch.device):
        z = torch.zeros((), device=device)
        self.acc = {"loss_sum": z.clone(), "err_sum": z.clone(), "count": z.clone(),
                    "bad_step": torch.full((), -1, dtype=torch.int64, device=device)}

    @torch.no_grad()
    def add(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor, step: int) -> None:
        acc = self.acc
        loss_d = loss.detach().float()
        acc["loss_sum"] += loss_d * y.numel()
        acc["err_sum"] += (out.argmax(1) != y).sum()
        acc["count"] += y.numel()
        bad = ~torch.isfinite(loss_d) & (acc["bad_step"] < 0)
        acc["bad_step"].copy_(torch.where(bad, step, acc["bad_step"]))

    def totals(self, world: World) -> dict[str, float]:
        """The sums on the host, over all ranks (every rank calls this)."""
        return world.totals(self.acc)

    def restart(self) -> None:
        """After an evaluation: the next interval starts from zero (bad_step stays)."""
        for k in ("loss_sum", "err_sum", "count"):
            self.acc[k].zero_()

    def to_save(self, world: World) -> dict[str, torch.Tensor]:
        """What a checkpoint holds. Data-parallel: the sums over all ranks (every rank calls
        this), which rank 0 saves and alone restores."""
        if not world.enabled:
            return {k: v.detach().cpu() for k, v in self.acc.items()}
        totals = world.totals(self.acc)
        return {k: torch.tensor(totals[k], dtype=v.dtype) for k, v in self.acc.items()}

    def load(self, saved: dict[str, torch.Tensor]) -> None:
        for k, v in saved.items():
            self.acc[k].copy_(v)
