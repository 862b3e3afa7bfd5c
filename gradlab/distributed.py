"""One run, data-parallel: the process group, what each rank does, and `--nproc` via torchrun.

Launched by torchrun (``WORLD_SIZE`` > 1 in the environment), a run is the same run as a
single process with the same global batch, to float tolerance:

* every rank takes its contiguous shard of the global batch (``gradlab.data.loader``), the
  model is wrapped in DistributedDataParallel (gradients averaged over ranks) and its
  BatchNorms are synchronized (``gradlab.sync_batchnorm``), so the update is the global
  batch's;
* running train loss/error sums are all-reduced before they are logged, the test set is
  split between ranks and the error counts summed;
* rank 0 alone holds the run lock and writes spec/status/metrics/layers/checkpoints and
  runs callbacks; every rank resumes from the same checkpoint file (checked);
* a stop request (SIGINT/SIGTERM) on any rank stops every rank after the same step.

The recorder runs on every rank; rank 0's rows are written. Parameter statistics are those
of the averaged (synchronized) gradients. ``act_grad_norm`` is made the full batch's:
rank r's autograd gives ``W * dL/dh`` on its shard (its local mean loss, coupled through the
synchronized BatchNorms), so the full norm is ``sqrt(sum_r ||g_r||^2) / W``, all-reduced
when the rows are flushed. Activation statistics (act_mean, act_std, act_zero_frac,
branch_ratio) are those of rank 0's shard, i.e. of the first ``act_sample`` (16) examples
of the global batch, as single-process, whenever the per-rank batch holds at least 16.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from gradlab.errors import ConfigError


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer; "
                          f"launch data-parallel runs with torchrun or `gradlab train --nproc N`") from None


@dataclass
class World:
    """This process's place in a data-parallel run (size 1: a plain single-process run)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    _host_group: object = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> "World":
        """From torchrun's RANK/WORLD_SIZE/LOCAL_RANK; size 1 when they are absent."""
        size = _env_int("WORLD_SIZE", 1)
        return cls(rank=_env_int("RANK", 0), size=max(size, 1), local_rank=_env_int("LOCAL_RANK", 0))

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    # -- setup ---------------------------------------------------------------------------
    def check_batch(self, batch_size: int) -> None:
        shard_size(batch_size, self.size)

    def device_for(self, device: torch.device) -> torch.device:
        """CUDA runs use the GPU numbered by LOCAL_RANK; a missing GPU is a clear error."""
        if not self.enabled or device.type != "cuda":
            return device
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise ConfigError(f"process {self.local_rank} of this node needs GPU cuda:{self.local_rank}, but only "
                              f"{count} GPU(s) are visible; use --nproc {count} or fewer (or --device cpu)")
        return torch.device("cuda", self.local_rank)

    @contextlib.contextmanager
    def started(self, device: torch.device):
        """The process group for the duration of a run: nccl on CUDA, gloo on CPU; host-side
        flags and recorder rows go through a gloo group. An existing group is reused."""
        if not self.enabled:
            yield self
            return
        owned = not dist.is_initialized()
        if owned:
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if dist.get_world_size() != self.size or dist.get_rank() != self.rank:
            raise ConfigError(f"the process group has rank {dist.get_rank()} of {dist.get_world_size()}, but the "
                              f"environment says {self.rank} of {self.size}")
        self.backend = dist.get_backend()
        self._host_group = dist.new_group(backend="gloo") if self.backend != "gloo" else None
        ok = False
        try:
            yield self
            ok = True
        finally:
            if ok:
                dist.barrier()  # rank 0's last files are written before anyone reports
            if owned:
                dist.destroy_process_group()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DistributedDataParallel around ``model`` (the model itself when single-process).

        Buffers are not broadcast: synchronized BatchNorms keep identical running statistics
        on every rank, and evaluation then needs no collective per forward."""
        if not self.enabled:
            return model
        ids = [device.index] if device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel
        # a block that stochastic depth drops leaves its parameters without a gradient that step
        unused = {"find_unused_parameters": getattr(model, "drop_rng", None) is not None}
        if "forward_sync_buffers" in inspect.signature(ddp).parameters:  # newer torch: broadcast_buffers deprecated
            return ddp(model, device_ids=ids, forward_sync_buffers=False, **unused)
        return ddp(model, device_ids=ids, broadcast_buffers=False, **unused)

    def describe(self, batch_size: int, batchnorm: str | None) -> dict:
        """What spec.json records about the data-parallel setup."""
        return {"world_size": self.size, "backend": self.backend, "batch_per_rank": batch_size // self.size,
                "batchnorm": batchnorm}

    # -- collectives (no-ops in a single process) -----------------------------------------
    def totals(self, acc: dict[str, torch.Tensor]) -> dict[str, float]:
        """The trainer's running sums over all ranks, on the host; bad_step is the first
        non-finite step seen by any rank (-1: none)."""
        if not self.enabled:
            return {k: v.item() for k, v in acc.items()}
        sums = torch.stack([acc["loss_sum"].float(), acc["err_sum"].float(), acc["count"].float()]).double()
        bad = acc["bad_step"].clone()
        bad = torch.where(bad < 0, torch.iinfo(torch.int64).max, bad)
        dist.all_reduce(sums)
        dist.all_reduce(bad, op=dist.ReduceOp.MIN)
        loss_sum, err_sum, count = sums.tolist()
        first_bad = int(bad)
        return {"loss_sum": loss_sum, "err_sum": err_sum, "count": count,
                "bad_step": -1 if first_bad == torch.iinfo(torch.int64).max else first_bad}

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(t)
        return t

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of n items (evaluation sets)."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def agree(self, flag: bool) -> bool:
        """True on every rank when it is true on any (stop requests)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._host_group)
        return bool(t.item())

    def check_same(self, value: int, what: str) -> None:
        """Every rank must hold the same ``value`` (e.g. the step it resumes from)."""
        if not self.enabled:
            return
        t = torch.tensor([value, -value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._host_group)
        if int(t[0]) != -int(t[1]):
            raise ConfigError(f"processes disagree on {what} ({-int(t[1])} to {int(t[0])}); every process must "
                              f"see the same run directory (a shared file system across nodes)")

    def full_batch_grad_norms(self, values: np.ndarray) -> np.ndarray:
        """``act_grad_norm`` of the global batch from each rank's shard norms (see module doc)."""
        if not self.enabled:
            return values
        self.check_same(len(values), "the number of recorded activation-gradient rows")
        t = torch.from_numpy(np.square(np.asarray(values, dtype=np.float64)))
        dist.all_reduce(t, group=self._host_group)
        return np.sqrt(t.numpy()) / self.size


def shard_size(batch_size: int, world_size: int) -> int:
    """Each process's part of a global batch; a clear error when it does not split evenly."""
    if batch_size % world_size:
        raise ConfigError(f"the global batch of {batch_size} cannot be split evenly over {world_size} processes; "
                          f"use a --batch-size that is a multiple of {world_size}")
    return batch_size // world_size


def launch(nproc: int, args: list[str]) -> int:
    """Run ``gradlab <args>`` as ``nproc`` processes on this machine through torchrun.

    torchrun (``python -m torch.distributed.run --standalone``) picks a free port, sets
    RANK/WORLD_SIZE/LOCAL_RANK and tears every process down when one fails. Returns its
    exit status; a Ctrl-C reaches torchrun too, so this waits for it to finish."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "gradlab", *args]
    proc = subprocess.Popen(cmd)
    while True:
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            continue
        return code if code >= 0 else 128 - code  # killed by signal N: the shell's 128 + N
