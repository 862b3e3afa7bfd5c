"""ImageNet-format data (torchvision ImageFolder), streamed from disk by worker processes.

A dataset such as ImageNet does not fit on the device as one tensor, so this loader
decodes and augments images in DataLoader workers and offers the interface the trainer
uses from `gradlab.data.loader.DeviceLoader`: `batch(step)`, `eval_batches(...)`,
`epoch_of(step)`, `steps_per_epoch`.

Resume is exact for the data: the epoch's order and each image's augmentation seed
come from a generator seeded by (seed, epoch), and every image is augmented under its
own seed, so the batch at a step is the same whatever the number of workers and
whether or not the run was resumed (a resumed run starts its epoch's sampler at the
right batch without decoding the images before it). What is not reproduced across
machines is decoding itself: a different Pillow/libjpeg version may decode a JPEG a
few levels differently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from gradlab.config import DataSpec
from gradlab.distributed import shard_size
from gradlab.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUT = "PATH/train/<class>/<image>.jpg and PATH/val/<class>/<image>.jpg (torchvision ImageFolder layout)"
WORKERS_ENV = "GRADLAB_LOADER_WORKERS"


@dataclass
class FolderDataset:
    """Two ImageFolders (train/ and val/; val/ is the test set) and their labels.

    Labels are held as tensors so that the trainer's bookkeeping (sizes, classes) is the
    same as for a `gradlab.data.Dataset`; the images stay on disk.
    """

    name: str
    train: object  # torchvision.datasets.ImageFolder
    test: object
    train_y: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    image_size: int
    augment: bool
    val_y: torch.Tensor | None = None  # no held-out split: val/ is the test set

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def eval_sets(self) -> dict:
        """name -> (images, labels) as `FolderLoader.eval_batches` takes them; both slice alike
        (a data-parallel trainer evaluates each rank's contiguous part)."""
        return {"test": (FolderImages(self.test.samples, self.test.loader, 0, len(self.test.samples)), self.test_y)}


@dataclass(frozen=True)
class FolderImages:
    """Samples [start, stop) of an image folder's (path, label) list and the function that opens
    one. Slicing gives a part that shares the list, so a loader can recognise it next time."""

    base: list
    loader: object
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, part: slice) -> "FolderImages":
        r = range(self.start, self.stop)[part]
        if r.step != 1:
            raise ValueError("image folders slice into contiguous parts only")
        return FolderImages(self.base, self.loader, r.start, r.stop)

    @property
    def samples(self) -> list:
        return self.base[self.start:self.stop]


def load_folder(spec: DataSpec) -> FolderDataset:
    """Read the class folders of `spec.data_dir`/train and /val; raises DataError on a bad layout."""
    from torchvision import datasets

    if spec.data_dir is None:
        raise DataError(f"--dataset imagefolder needs --data-dir PATH, with {LAYOUT}")
    if spec.val_split:
        raise DataError("imagefolder uses val/ as the test set and holds out no training images; "
                        "drop --val-split (set val_split = 0)")
    if spec.image_size < 8:
        raise DataError(f"image_size must be at least 8 pixels, got {spec.image_size}")
    root = Path(spec.data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{root} does not exist; --data-dir must hold {LAYOUT}")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(f"{root} has no {split}/ folder; expected {LAYOUT}")
    folders = {}
    for split in ("train", "val"):
        try:
            folders[split] = datasets.ImageFolder(str(root / split))
        except (FileNotFoundError, OSError) as e:  # no class folders, or no image in them
            raise DataError(f"{root / split} is not an image folder ({e}); expected {LAYOUT}") from e
    train, test = folders["train"], folders["val"]
    if train.classes != test.classes:
        only = sorted(set(train.classes) ^ set(test.classes))
        raise DataError(f"{root}: train/ and val/ must have the same class folders; "
                        f"not in both: {', '.join(only[:5])}{' …' if len(only) > 5 else ''}")
    return FolderDataset(
        name=spec.name, train=train, test=test,
        train_y=torch.as_tensor(train.targets, dtype=torch.int64),
        test_y=torch.as_tensor(test.targets, dtype=torch.int64),
        num_classes=len(train.classes), image_size=spec.image_size, augment=spec.augment,
    )


def train_transform(size: int):
    """Standard ImageNet training augmentation at crop side `size`."""
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(size: int):
    """Resize the short side to 256/224 of `size` (256 at 224), then center-crop `size`."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class _Transformed(torch.utils.data.Dataset):
    """An ImageFolder through a transform; a key (index, seed) augments under its own seed."""

    def __init__(self, folder, transform):
        self.samples, self.loader, self.transform = folder.samples, folder.loader, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, target = self.samples[index]
        image = self.loader(path)
        if seed is None:
            return self.transform(image), target
        # torchvision's transforms draw from the CPU generator; seed only that one (torch.manual_seed
        # would also reseed every CUDA generator) and give the caller its state back
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            return self.transform(image), target


def epoch_plan(seed: int, epoch: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The order of the `n` training images in `epoch` and each position's augmentation seed."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g), torch.randint(0, 2**62, (n,), generator=g)


class _EpochSampler(Sampler):
    """(index, seed) keys of one epoch from batch `start` on; set epoch/start, then iterate.

    Of each global batch it yields positions [shard_start, shard_start + shard_size): one
    rank's contiguous part in a data-parallel run, the whole batch otherwise. It runs in the
    main process, so persistent workers see new epochs without restarting.
    """

    def __init__(self, n: int, batch_size: int, steps_per_epoch: int, seed: int, shard_start: int, shard_size: int):
        self.n, self.batch_size, self.steps_per_epoch, self.seed = n, batch_size, steps_per_epoch, seed
        self.shard_start, self.shard_size = shard_start, shard_size
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start) * self.shard_size

    def __iter__(self):
        order, seeds = epoch_plan(self.seed, self.epoch, self.n)
        for b in range(self.start, self.steps_per_epoch):
            first = b * self.batch_size + self.shard_start
            for k in range(first, first + self.shard_size):
                yield int(order[k]), int(seeds[k])


def default_workers() -> int:
    """Loader worker processes: $GRADLAB_LOADER_WORKERS, else this process's share of the CPUs it may use
    (divided among torchrun's local processes), minus one, at most 8."""
    if os.environ.get(WORKERS_ENV):
        try:
            return max(0, int(os.environ[WORKERS_ENV]))
        except ValueError:
            raise DataError(f"${WORKERS_ENV} should be a whole number of worker processes, "
                            f"got {os.environ[WORKERS_ENV]!r}") from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # torchrun: shared out
    return max(1, min(8, per_process - 1))


class FolderLoader:
    """Training batches by global step from an ImageFolder, drawn without replacement per epoch.

    In a data-parallel run (``world_size`` > 1) ``batch_size`` is the global batch and
    ``batch(step)`` returns rank ``rank``'s contiguous shard of it, as DeviceLoader does.
    """

    def __init__(self, data: FolderDataset, batch_size: int, seed: int, device: torch.device,
                 channels_last: bool = False, workers: int | None = None, rank: int = 0, world_size: int = 1):
        n = len(data.train_y)
        if batch_size > n:
            raise DataError(f"batch size {batch_size} is larger than the {n} training images in "
                            f"{data.train.root}; use --batch-size {n} or less")
        self.shard_size = shard_size(batch_size, world_size)
        self.device, self.batch_size, self.seed, self.n = device, batch_size, seed, n
        self.steps_per_epoch = n // batch_size  # the incomplete last batch is dropped
        self.channels_last = channels_last
        self.workers = default_workers() if workers is None else workers
        size = data.image_size
        self._train = _Transformed(data.train, train_transform(size) if data.augment else eval_transform(size))
        self._eval_transform = eval_transform(size)
        self._sampler = _EpochSampler(n, batch_size, self.steps_per_epoch, seed, rank * self.shard_size,
                                      self.shard_size)
        self._loader = None
        self._eval_loaders: dict[tuple, DataLoader] = {}
        self._it = None
        self._next_step = -1

    def _data_loader(self, dataset, persistent: bool, **kwargs) -> DataLoader:
        return DataLoader(dataset, batch_size=self.shard_size, num_workers=self.workers,
                          persistent_workers=persistent and self.workers > 0, pin_memory=self.device.type == "cuda",
                          **kwargs)

    def close(self) -> None:
        """Stop the training workers now rather than whenever the loader is garbage-collected."""
        self._it = self._loader = None
        self._eval_loaders.clear()

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._it is None or step != self._next_step or i == 0:
            if self._loader is None:
                self._loader = self._data_loader(self._train, True, sampler=self._sampler, drop_last=True)
            self._sampler.epoch, self._sampler.start = epoch, i
            self._it = iter(self._loader)
        x, y = next(self._it)
        self._next_step = step + 1
        return self._to_device(x, y)

    def eval_batches(self, images: FolderImages, y: torch.Tensor):
        """Unaugmented (resize, center crop), normalized batches of evaluation images, in order."""
        key = (id(images.base), images.start, images.stop)
        if key not in self._eval_loaders:
            # workers only while evaluating: between evaluations they would sit idle
            self._eval_loaders[key] = self._data_loader(_Transformed(images, self._eval_transform), False,
                                                        shuffle=False)
        for xb, yb in self._eval_loaders[key]:
            yield self._to_device(xb, yb)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)
