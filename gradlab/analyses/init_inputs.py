"""Inputs for the at-init analyses: a real batch of a dataset, or Gaussian noise of its shape.

    batch = probe_batch("digits", 128, seed=0)                 # real, normalized as in training
    batch = probe_batch("digits", 128, seed=0, inputs="gaussian")
    model = build("resnet56", num_classes=batch.num_classes, in_channels=batch.in_channels)
    loss = F.cross_entropy(model(batch.x), batch.y)

A real batch is what the first training step would see (the training set, normalized by
its channel statistics through gradlab.data.loader.DeviceLoader) without augmentation, so the
numbers describe the data and not a random crop. Gaussian inputs are N(0, 1) in the
dataset's image shape (Brock et al. 2021 probe with them), with uniformly random labels,
and need no dataset files.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradlab.config import DataSpec
from gradlab.errors import DataError

__all__ = ["DATASETS", "INPUTS", "ProbeBatch", "dataset_shape", "probe_batch"]

INPUTS = ("real", "gaussian")

# (C, H, W) and classes of each in-memory dataset, so Gaussian inputs need no download.
# (imagefolder, ImageNet-sized images read from disk, is not offered: these probes build
# CIFAR-family nets.)
_SHAPES = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10),
    "synthetic": (DataSpec.synthetic_shape, DataSpec.num_classes),
}
DATASETS = tuple(_SHAPES)


@dataclass
class ProbeBatch:
    """One batch to probe a fresh model with. ``y`` is random for Gaussian inputs."""

    x: torch.Tensor  # float32 [B, C, H, W]
    y: torch.Tensor  # int64 [B]
    num_classes: int
    dataset: str
    inputs: str  # "real" | "gaussian"

    @property
    def in_channels(self) -> int:
        return int(self.x.shape[1])


def dataset_shape(dataset: str) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), classes) of a dataset, without loading it."""
    if dataset not in _SHAPES:
        raise DataError(f"the at-init probes cannot use dataset '{dataset}'; choose one of: {', '.join(_SHAPES)}")
    shape, classes = _SHAPES[dataset]
    return tuple(shape), classes


def probe_batch(
    dataset: str = "digits",
    batch_size: int = 128,
    seed: int = 0,
    inputs: str = "real",
    data_dir: str | None = None,
    device: torch.device | str = "cpu",
) -> ProbeBatch:
    """A batch of ``batch_size`` examples; ``seed`` picks which examples (or the noise)."""
    if inputs not in INPUTS:
        raise DataError(f"unknown inputs {inputs!r}; choose one of: {', '.join(INPUTS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise DataError(f"batch size must be a whole number >= 2 (BatchNorm needs two examples), not {batch_size!r}")
    device = torch.device(device)
    shape, classes = dataset_shape(dataset)
    if inputs == "gaussian":
        g = torch.Generator().manual_seed(seed)
        x = torch.randn((batch_size, *shape), generator=g)
        y = torch.randint(0, classes, (batch_size,), generator=g)
        return ProbeBatch(x.to(device), y.to(device), classes, dataset, inputs)
    from gradlab.data import Augment, load
    from gradlab.data.loader import DeviceLoader

    data = load(DataSpec(name=dataset, data_dir=data_dir, augment=False))
    loader = DeviceLoader(data, batch_size, seed, device, augment=Augment())
    x, y = loader.batch(0)
    return ProbeBatch(x, y, data.num_classes, dataset, inputs)
