"""The frozen dataclasses that describe a run and a compare: model, data, recipe, preset.

They hold values only; presets (TOML files) fill them in gradlab.presets and
gradlab.config checks them and builds a RunSpec from a preset and command-line flags.
A RunSpec's name is its run directory's name; its to_dict is what spec.json holds.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from gradlab.families import PAPER
from gradlab.models import options as model_options
from gradlab.recipe_keys import short, shown

__all__ = ["FREEZE_CHOICES", "TORCHVISION_WEIGHTS", "CompareSpec", "DataSpec", "ModelSpec", "Preset", "Recipe",
           "RunSpec", "recipe_tag"]  # fmt: skip


@dataclass(frozen=True)
class ModelSpec:
    name: str = "resnet20"
    shortcut: str | None = None  # CIFAR family: "A" (default), "B", "C"
    zero_init_residual: bool = False
    norm: str = "bn"  # CIFAR plain nets and ResNets: "none" drops every BatchNorm (gradlab.models.options)
    act: str = "relu"  # CIFAR plain nets and ResNets: "tanh" or "sigmoid" on the main path
    drop_path: float = 0.0  # residual CIFAR-layout nets: stochastic depth, the last block's drop probability
    weights: str | None = None  # fine-tuning: "torchvision" or a state-dict file (gradlab.finetune)
    freeze: str = "none"  # fine-tuning: none | backbone | all-but-last-stage

    def build_options(self) -> dict:
        """The keywords of gradlab.models.build this spec sets (besides name and data shape):
        one list for the trainer and for whatever rebuilds a trained run's model."""
        return {"shortcut": self.shortcut, "zero_init_residual": self.zero_init_residual, "norm": self.norm,
                "act": self.act, "drop_path": self.drop_path}


TORCHVISION_WEIGHTS = "torchvision"
# none; backbone = all but the classifier; all-but-last-stage = all but the last stage and the classifier
FREEZE_CHOICES = ("none", "backbone", "all-but-last-stage")
_FREEZE_TAGS = {"none": "", "backbone": "frozen", "all-but-last-stage": "frozen-but-last"}


@dataclass(frozen=True)
class DataSpec:
    name: str = "cifar10"  # cifar10 | cifar100 | mnist | fashion-mnist | digits | synthetic | imagefolder
    data_dir: str | None = None  # None: ~/.cache/gradlab/data (or $GRADLAB_DATA)
    val_split: int = 0  # training images held out for validation (paper: 5000 of 50k)
    augment: bool = True  # the dataset's standard augmentation (CIFAR: pad 4, crop, flip)
    download: bool = True  # try torchvision's download when the files are missing
    synthetic_shape: tuple[int, ...] = (3, 32, 32)  # synthetic only: C, H, W
    synthetic_size: int = 2048  # synthetic only: training images (test: a quarter)
    num_classes: int = 10  # synthetic only
    image_size: int = 224  # imagefolder only: training crop side (evaluation: resize to 256/224 of it, center crop)


@dataclass(frozen=True)
class Recipe:
    """Optimizer and schedule, in iterations. Defaults are He et al. 2015 §4.2 (CIFAR)."""

    steps: int = 64000
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    milestones: tuple[int, ...] = (32000, 48000)  # lr divided by `gamma` at each
    gamma: float = 0.1
    # "for 110 layers and deeper, lr 0.01 until training error falls below 80%"
    warmup_lr: float = 0.01
    warmup_min_depth: int = 110
    warmup_exit_err: float = 0.80
    warmup_check_every: int = 10  # steps between checks of the running train error
    eval_every: int = 400
    checkpoint_every: int = 4000
    keep_checkpoints: int = 1  # checkpoint.pt plus this many minus one older ones
    record: bool = True  # per-layer statistics into layers.parquet
    record_every: int = 0  # 0: chosen from the run length (gradlab.recorder.default_schedule)


@dataclass(frozen=True)
class RunSpec:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    recipe: Recipe = field(default_factory=Recipe)
    seed: int = 0
    experiment: str = "default"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: bool = False
    # torch.compile mode: "default", "reduce-overhead" (CUDA graphs), "max-autotune",
    # "max-autotune-no-cudagraphs"
    compile_mode: str = "default"
    deterministic: bool = True  # deterministic algorithms (exact resume on CPU)
    named_by: tuple[str, ...] = ()  # recipe keys a sweep varies: their values are in the run's name

    @property
    def name(self) -> str:
        """Run directory name: model, options that change it, seed."""
        parts = [self.model.name]
        if self.model.shortcut:
            parts.append(f"opt{self.model.shortcut}")
        if self.model.zero_init_residual:
            parts.append("zinit")
        parts += model_options.run_tags(self.model.norm, self.model.act, self.model.drop_path)
        if self.model.weights:  # fine-tuned runs get their own directory: resnet50-ft-frozen-s0
            parts.append("ft")
        if _FREEZE_TAGS.get(self.model.freeze):
            parts.append(_FREEZE_TAGS[self.model.freeze])
        parts += [recipe_tag(key, getattr(self.recipe, key)) for key in self.named_by]
        parts.append(f"s{self.seed}")
        return "-".join(parts)

    def to_dict(self) -> dict:
        """JSON-ready (tuples as lists), so that it equals what spec.json reads back."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def recipe_tag(key: str, value) -> str:
    """A recipe value as a run-name part: lr 0.1 -> "lr0.1", milestones (150, 225) -> "milestones150_225"."""
    if isinstance(value, bool):
        return f"{short(key)}{'on' if value else 'off'}"
    return f"{short(key)}{shown(value).replace('/', '_')}"


@dataclass(frozen=True)
class CompareSpec:
    depths: tuple[int, ...] = (20, 56, 110)
    families: tuple[str, ...] = PAPER
    seeds: tuple[int, ...] = (0,)
    arch: str = "cifar"  # which nets plain{d}/resnet{d} name: cifar (6n+2), imagenet (18..152) or preact


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    data: DataSpec
    recipe: Recipe
    compare: CompareSpec
    source: str  # file it came from

