"""The device-resident batch loader.

The whole training set lives on the device as uint8. A batch is a pure function of
(seed, step): the epoch's order and every image's crop offset and flip come from a
generator seeded by (seed, epoch), so a resumed run sees exactly the batches an
uninterrupted one would. Augmentation and normalization are a few batched tensor ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gradlab.data.datasets import Augment, Dataset
from gradlab.distributed import shard_size
from gradlab.errors import DataError


def normalize(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [B,C,H,W] -> float32, scaled to [0, 1] and standardized per channel."""
    scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
    shift = (mean / std).view(1, -1, 1, 1)
    return x_uint8.float().mul_(scale).sub_(shift)


def crop_and_flip(x: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
    """Zero-pad each image by `pad`, take the HxW window at (dy, dx), mirror where `flip`.

    Equivalent to torchvision's RandomCrop(size, padding=pad) + RandomHorizontalFlip per
    image, done for the whole batch with one gather.
    """
    b, c, h, w = x.shape
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
        cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
        batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
        x = padded[batch, chan, rows, cols]
    if flip is not None:
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    return x


EVAL_BATCH = 1000  # images per evaluation batch


def eval_batches(x_uint8: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 device: torch.device, channels_last: bool = False, batch_size: int = EVAL_BATCH):
    """Unaugmented batches of an evaluation set, moved to ``device`` and normalized with the
    training set's channel ``mean`` and ``std`` (on ``device``)."""
    for start in range(0, len(y), batch_size):
        xb = normalize(x_uint8[start:start + batch_size].to(device, non_blocking=True), mean, std)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        yield xb, y[start:start + batch_size].to(device, non_blocking=True)


def check_batch(batch_size: int, images: int, name: str) -> None:
    """A batch must fit in one epoch of the training set (DataError otherwise)."""
    if batch_size > images:
        raise DataError(f"batch size {batch_size} is larger than the {images} training images of {name}; "
                        f"use --batch-size {images} or less")


class DeviceLoader:
    """Training batches by global step, drawn without replacement within each epoch.

    In a data-parallel run (``world_size`` > 1) ``batch_size`` is the global batch and
    ``batch(step)`` returns rank ``rank``'s contiguous shard of it: rows
    [rank*B/W, (rank+1)*B/W) of the single-process batch, identically augmented.
    """

    def __init__(self, data: Dataset, batch_size: int, seed: int, device: torch.device,
                 channels_last: bool = False, augment: Augment | None = None, rank: int = 0, world_size: int = 1):
        n = len(data.train_y)
        check_batch(batch_size, n, data.name)
        self.shard_size = shard_size(batch_size, world_size)
        self.shard_start = rank * self.shard_size
        self.device = device
        self.batch_size = batch_size
        self.seed = seed
        self.n = n
        self.steps_per_epoch = n // batch_size  # the incomplete last batch is dropped
        self.augment = data.augment if augment is None else augment
        self.channels_last = channels_last
        self.x = data.train_x.to(device)
        self.y = data.train_y.to(device)
        mean, std = data.channel_stats()
        self.mean, self.std = mean.to(device), std.to(device)
        self._epoch = -1

    def _prepare_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self._order = torch.randperm(self.n, generator=g).to(self.device)
        pad = self.augment.pad
        self._dy = torch.randint(0, 2 * pad + 1, (self.n,), generator=g).to(self.device)
        self._dx = torch.randint(0, 2 * pad + 1, (self.n,), generator=g).to(self.device)
        self._flip = (torch.rand(self.n, generator=g) < 0.5).to(self.device) if self.augment.flip else None
        self._epoch = epoch

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._prepare_epoch(epoch)
        start = i * self.batch_size + self.shard_start
        sl = slice(start, start + self.shard_size)
        idx = self._order[sl]
        x = self.x[idx]
        if self.augment.pad or self.augment.flip:
            flip = self._flip[sl] if self._flip is not None else None
            x = crop_and_flip(x, self.augment.pad, self._dy[sl], self._dx[sl], flip)
        x = normalize(x, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.y[idx]

    def eval_batches(self, x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH):
        """Unaugmented, normalized batches of an evaluation set (see the module's eval_batches)."""
        return eval_batches(x_uint8, y, self.mean, self.std, self.device, self.channels_last, batch_size)
