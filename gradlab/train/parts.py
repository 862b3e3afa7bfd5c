"""The parts of one run, built from its spec: data, model, optimizer, schedule, forward.

He et al. 2015 §4.2: SGD with momentum 0.9 and weight decay 1e-4 at batch 128, the
learning rate of gradlab.train.lr_schedule. The model is built for the data's channels and
classes, wrapped in DistributedDataParallel with synchronized BatchNorms under torchrun
(gradlab.distributed), put in channels_last on CUDA, and compiled when asked; recorded
steps run the eager module, so the recorder's hooks never meet compiled code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from gradlab import data as datasets
from gradlab import families, models
from gradlab.config import Recipe, RunSpec
from gradlab.data.loader import DeviceLoader
from gradlab.distributed import World
from gradlab.environment import describe
from gradlab.recorder import Recorder, Schedule, default_schedule, watch
from gradlab.run_writer import RunWriter
from gradlab.train.lr_schedule import PaperSchedule
from gradlab.train.run_fields import run_fields

__all__ = ["RunParts", "build_parts", "start_recording"]


@dataclass
class RunParts:
    """Everything a run trains with, built once."""

    data: datasets.Dataset
    model: nn.Module  # the module itself (what the recorder watches and checkpoints hold)
    model_info: dict  # its description for spec.json (gradlab.models.describe)
    loader: object  # DeviceLoader, or FolderLoader for images streamed from disk
    eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]]
    optimizer: torch.optim.Optimizer
    lr: PaperSchedule
    eager_forward: nn.Module  # DistributedDataParallel around the model, or the model
    forward: nn.Module  # eager_forward, compiled if asked
    env: dict  # where the run trains, for spec.json


def build_parts(spec: RunSpec, recipe: Recipe, world: World, device: torch.device,
                dataset: datasets.Dataset | None = None, pretrained: dict | None = None) -> RunParts:
    """The run's parts on ``device`` (``pretrained``: the state dict a fine-tuning run starts from)."""
    cuda = device.type == "cuda"
    torch.manual_seed(spec.seed)
    ds = dataset or datasets.load(spec.data)
    model = models.build(spec.model.name, num_classes=ds.num_classes, in_channels=ds.shape[0],
                         **spec.model.build_options())
    info = models.describe(model, spec.model.name, input_size=ds.shape)
    if spec.model.weights:
        from gradlab import finetune

        info["finetune"] = finetune.prepare(model, spec.model, pretrained)
    batchnorm = None
    if world.enabled:  # the global batch's statistics, as in a single process
        from gradlab.sync_batchnorm import convert

        model, batchnorm = convert(model, device)
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    loader, eval_sets = _loader(spec, recipe, ds, world, device)
    optimizer = torch.optim.SGD(
        model.param_groups(),  # frozen (fine-tuning) parameters stay out; Fixup's scalars at lr/10
        lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
        nesterov=recipe.nesterov, **({"fused": True} if cuda else {"foreach": True}),
    )
    lr = PaperSchedule(recipe, info["depth"], warmup=info["family"] in families.PAPER)
    parallel = world.wrap(model, device)  # DistributedDataParallel, or the model itself
    forward = torch.compile(parallel, mode=spec.compile_mode) if spec.compile else parallel
    env = describe(device)
    if world.enabled:
        env["distributed"] = world.describe(recipe.batch_size, batchnorm)
    return RunParts(ds, model, info, loader, eval_sets, optimizer, lr, parallel, forward, env)


def _loader(spec: RunSpec, recipe: Recipe, ds, world: World, device: torch.device):
    """The batch loader and the evaluation sets (on the device, unless streamed from disk)."""
    shard = {"rank": world.rank, "world_size": world.size, "channels_last": device.type == "cuda"}
    if spec.data.name == "imagefolder":  # streamed from disk: too big to live on the device
        from gradlab.data.image_folders import FolderLoader

        return FolderLoader(ds, recipe.batch_size, spec.seed, device, **shard), ds.eval_sets()
    loader = DeviceLoader(ds, recipe.batch_size, spec.seed, device, **shard)
    eval_sets = {"test": (ds.test_x.to(device), ds.test_y.to(device))}
    if ds.val_y is not None:
        eval_sets["val"] = (ds.val_x.to(device), ds.val_y.to(device))
    return loader, eval_sets


def start_recording(spec: RunSpec, recipe: Recipe, world: World, parts: RunParts,
                    writer: RunWriter | None) -> Recorder | None:  # fmt: skip
    """The recorder on the model when the recipe records (data-parallel: on every rank, its
    gradient norms combined over them), writing through ``writer`` (rank 0's; None: nothing
    written); without a recorder the writer is opened here. The trainer records through
    gradlab.watch like anyone's loop: the run directory is the same."""
    if writer is not None:
        writer.set_run(parts.model_info, run_fields(spec, parts.data, parts.env))
    if recipe.record:
        schedule = Schedule(every=recipe.record_every) if recipe.record_every else default_schedule(recipe.steps)
        return watch(parts.model, schedule=schedule, run_dir=writer, combine_ranks=world.enabled)
    if writer is not None:
        writer.open(parts.model_info, None, parts.env)
    return None
