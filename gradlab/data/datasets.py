"""Datasets as whole uint8 tensors, ready to live on the training device.

CIFAR and MNIST come through torchvision's own dataset classes (their file formats,
their download code); `digits` is scikit-learn's bundled 8x8 handwritten digits (real
data, works offline); `synthetic` is random data for tests and benchmarks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from gradlab.config import DataSpec
from gradlab.errors import DataError

DATASETS = ("cifar10", "cifar100", "mnist", "fashion-mnist", "digits", "synthetic", "imagefolder")
OFFLINE_HINT = "to work offline, use the bundled dataset: --dataset digits (or --preset quick)"


@dataclass(frozen=True)
class Augment:
    """Batched augmentation: zero-pad by `pad` pixels, random crop back, optional h-flip."""

    pad: int = 0
    flip: bool = False


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # uint8 [N, C, H, W]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    augment: Augment
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images, in [0, 1] units."""
        x = self.train_x.float().div_(255)
        return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-3)


def default_data_dir() -> Path:
    return Path(os.environ.get("GRADLAB_DATA", Path.home() / ".cache" / "gradlab" / "data"))


class Planned(NamedTuple):
    """A dataset's size known without loading it (for gradlab.memory's estimate)."""

    images: int  # training images held on the device; 0 for imagefolder, streamed from disk
    shape: tuple[int, int, int]  # (C, H, W) of one input
    classes: int | None  # None where only the folders on disk say (imagefolder)


# the datasets that live on the device whole
PLANNED = {"cifar10": Planned(50_000, (3, 32, 32), 10), "cifar100": Planned(50_000, (3, 32, 32), 100),
           "mnist": Planned(60_000, (1, 28, 28), 10), "fashion-mnist": Planned(60_000, (1, 28, 28), 10),
           "digits": Planned(1_437, (1, 8, 8), 10)}


def planned(spec: DataSpec) -> Planned:
    """What the dataset of ``spec`` will hold, without loading it."""
    if spec.name == "synthetic":
        return Planned(spec.synthetic_size, tuple(spec.synthetic_shape), spec.num_classes)
    if spec.name == "imagefolder":
        return Planned(0, (3, spec.image_size, spec.image_size), None)
    if spec.name not in PLANNED:
        raise DataError(f"unknown dataset '{spec.name}'; choose one of: {', '.join(DATASETS)}")
    return PLANNED[spec.name]


def load(spec: DataSpec, verify: bool = True) -> Dataset:
    """Load the dataset named by `spec`. `verify=False` skips torchvision's MD5 check.

    `imagefolder` is the exception: too big for memory, it comes back as a
    `gradlab.data.image_folders.FolderDataset` whose images stay on disk.
    """
    if spec.name not in DATASETS:
        raise DataError(f"unknown dataset '{spec.name}'; choose one of: {', '.join(DATASETS)}")
    if spec.name == "imagefolder":
        from gradlab.data.image_folders import load_folder

        return load_folder(spec)
    root = Path(spec.data_dir) if spec.data_dir else default_data_dir()
    if spec.name in ("cifar10", "cifar100"):
        ds = _cifar(spec, root, verify)
    elif spec.name in ("mnist", "fashion-mnist"):
        ds = _mnist(spec, root)
    elif spec.name == "digits":
        ds = _digits(spec)
    else:
        ds = _synthetic(spec)
    return _split_validation(ds, spec.val_split, seed=0)


def _nhwc_to_nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def _cifar(spec: DataSpec, root: Path, verify: bool) -> Dataset:
    from torchvision import datasets

    base = datasets.CIFAR10 if spec.name == "cifar10" else datasets.CIFAR100
    cls = base if verify else _without_checksums(base)
    folder = root / base.base_folder

    def make(train: bool):
        try:
            return cls(str(root), train=train, download=False)
        except RuntimeError:
            pass
        if folder.exists() and not verify:
            raise DataError(f"{folder} is incomplete: expected {', '.join(n for n, _ in base.train_list + base.test_list)}")
        if folder.exists():
            raise DataError(
                f"{folder} exists but its files fail torchvision's checksum (a partial or damaged copy); "
                f"delete it and download again, or point --data-dir at a good copy"
            )
        if not spec.download:
            raise DataError(_missing_message(spec.name, folder, base.url))
        try:
            return cls(str(root), train=train, download=True)
        except Exception as e:  # network errors come in many types (URLError, socket, SSL)
            raise DataError(_missing_message(spec.name, folder, base.url, reason=str(e))) from e

    train, test = make(True), make(False)
    return Dataset(
        name=spec.name,
        train_x=_nhwc_to_nchw(train.data),
        train_y=torch.as_tensor(train.targets, dtype=torch.int64),
        test_x=_nhwc_to_nchw(test.data),
        test_y=torch.as_tensor(test.targets, dtype=torch.int64),
        num_classes=len(train.classes),
        augment=Augment(pad=4, flip=True) if spec.augment else Augment(),
    )


def _without_checksums(base):
    """torchvision's class with its MD5s blanked: same reading code, any file contents."""
    return type(
        f"Unverified{base.__name__}",
        (base,),
        {
            "train_list": [(name, None) for name, _ in base.train_list],
            "test_list": [(name, None) for name, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        },
    )


def _missing_message(name: str, folder: Path, url: str, reason: str | None = None) -> str:
    why = f"the download failed ({reason}); " if reason else ""
    return (
        f"{name} is not on this machine: {why}expected its files in {folder}. Download {url}, extract it "
        f"there or anywhere and pass --data-dir <folder that contains {folder.name}>; {OFFLINE_HINT}"
    )


def _mnist(spec: DataSpec, root: Path) -> Dataset:
    from torchvision import datasets

    cls = datasets.MNIST if spec.name == "mnist" else datasets.FashionMNIST

    def make(train: bool):
        try:
            return cls(str(root), train=train, download=spec.download)
        except RuntimeError as e:
            raise DataError(
                f"{spec.name} is not on this machine: expected its files in {root / cls.__name__ / 'raw'}; "
                f"pass --data-dir pointing at a folder holding {cls.__name__}/raw; {OFFLINE_HINT}"
            ) from e
        except Exception as e:  # network errors
            raise DataError(f"{spec.name} could not be downloaded ({e}); {OFFLINE_HINT}") from e

    train, test = make(True), make(False)
    return Dataset(
        name=spec.name,
        train_x=train.data.unsqueeze(1).contiguous(),
        train_y=train.targets.to(torch.int64),
        test_x=test.data.unsqueeze(1).contiguous(),
        test_y=test.targets.to(torch.int64),
        num_classes=10,
        augment=Augment(),
    )


def _digits(spec: DataSpec) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [1797, 1, 8, 8]
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, bunch.target, test_size=0.2, random_state=0, stratify=bunch.target
    )
    return Dataset(
        name="digits",
        train_x=torch.from_numpy(x_tr),
        train_y=torch.from_numpy(y_tr).to(torch.int64),
        test_x=torch.from_numpy(x_te),
        test_y=torch.from_numpy(y_te).to(torch.int64),
        num_classes=10,
        augment=Augment(pad=1, flip=False) if spec.augment else Augment(),
    )


def _synthetic(spec: DataSpec) -> Dataset:
    if len(spec.synthetic_shape) != 3 or min(spec.synthetic_shape) <= 0:
        raise DataError(f"synthetic_shape must be C, H, W (positive), got {spec.synthetic_shape}")
    g = torch.Generator().manual_seed(1234)
    n_train, n_test = spec.synthetic_size, max(1, spec.synthetic_size // 4)

    def images(n):
        return torch.randint(0, 256, (n, *spec.synthetic_shape), generator=g, dtype=torch.uint8)

    def labels(n):
        return torch.randint(0, spec.num_classes, (n,), generator=g)

    return Dataset("synthetic", images(n_train), labels(n_train), images(n_test), labels(n_test),
                   spec.num_classes, Augment(pad=4, flip=True) if spec.augment else Augment())


def _split_validation(ds: Dataset, n_val: int, seed: int) -> Dataset:
    """Hold out `n_val` training images (fixed, seeded) as a validation set."""
    if n_val <= 0:
        return ds
    n = len(ds.train_y)
    if n_val >= n:
        raise DataError(f"--val-split {n_val} leaves no training data ({ds.name} has {n} training images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = perm[:n_val], perm[n_val:]
    ds.val_x, ds.val_y = ds.train_x[val], ds.train_y[val]
    ds.train_x, ds.train_y = ds.train_x[train], ds.train_y[train]
    return ds
