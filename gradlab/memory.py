"""Will a run fit? A lower estimate of its memory, checked before anything is built, so a
run that cannot fit is refused with numbers instead of exhausting the machine.

The estimate counts what training must hold: the weights four times over (weights,
gradients, SGD momentum, the recorder's copy for update ratios), every conv output twice
per example of the batch (autograd keeps a conv's output for its BatchNorm and the
ReLU's output for the next conv), the dataset as uint8 with its test set, and a fixed
base for the libraries. It is meant to err low: what it refuses cannot fit. How it
compares with measured peaks is in docs/reliability.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gradlab.config import RunSpec
from gradlab.data.datasets import planned
from gradlab.data.loader import check_batch
from gradlab.errors import ConfigError
from gradlab.models import info
from gradlab.models.complexity import complexity, conv_outputs

FLOAT = 4  # bytes of a float32
BASE = 512 * 2**20  # torch, pandas and the interpreter
GB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int  # bytes: weights, gradients, momentum, the recorder's copy
    activations: int  # bytes kept for the backward pass at the run's batch size
    data: int  # the dataset on the device
    total: int

    def describe(self) -> str:
        return (f"about {self.total / GB:.1f} GB or more (weights, gradients and optimizer {self.weights / GB:.1f} "
                f"GB, activations at this batch {self.activations / GB:.1f} GB, data {self.data / GB:.1f} GB)")


def estimate(spec: RunSpec) -> MemoryEstimate:
    """The lower estimate for one run of ``spec`` (its model, batch size and dataset)."""
    images, shape, classes = planned(spec.data)
    num_classes = classes or info(spec.model.name).num_classes  # imagefolder: the architecture's default
    params, _ = complexity(spec.model.name, num_classes=num_classes, in_channels=shape[0], shortcut=spec.model.shortcut,
                           input_size=shape, norm=spec.model.norm)  # fmt: skip
    outputs = conv_outputs(spec.model.name, shape, spec.model.shortcut, spec.model.norm)
    weights = 4 * params * FLOAT
    activations = 2 * outputs * spec.recipe.batch_size * FLOAT
    data = int(1.25 * images * shape[0] * shape[1] * shape[2])  # uint8, with a test set a quarter its size
    return MemoryEstimate(weights, activations, data, BASE + weights + activations + data)


def available(device) -> tuple[int | None, str]:
    """(bytes free for a run on ``device``, where they were read from); None if unknown."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {torch.cuda.get_device_name(device)}"
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024, "available on this machine (MemAvailable)"
    except (OSError, KeyError, ValueError):
        pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else -1
        if pages > 0:
            return pages * os.sysconf("SC_PAGE_SIZE"), "free on this machine"
        return None, "unknown"


def check_fits(spec: RunSpec, device, runs_at_once: int = 1) -> MemoryEstimate:
    """Refuse (ConfigError) a run whose lower estimate exceeds the memory available on
    ``device`` (``runs_at_once`` such runs sharing it); else return the estimate."""
    images = planned(spec.data).images
    if images:  # the more useful message first: a batch larger than the data
        check_batch(spec.recipe.batch_size, images - spec.data.val_split, spec.data.name)
    need = estimate(spec)
    free, where = available(device)
    if free is not None and need.total * runs_at_once > free:
        together = f"{runs_at_once} runs at once of " if runs_at_once > 1 else ""
        raise ConfigError(
            f"{together}{spec.name} at batch {spec.recipe.batch_size} needs {need.describe()}"
            f"{' each' if runs_at_once > 1 else ''}, more than the {free / GB:.1f} GB {where}; use a smaller "
            f"depth or --batch-size{', or fewer --jobs' if runs_at_once > 1 else ''}"
        )
    return need
