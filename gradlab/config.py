"""Run configuration: frozen dataclasses, presets (TOML files) and their validation.

A preset is a TOML file in `experiments/` (shipped in the wheel as gradlab.experiments)
with a top-level `preset = "<name>"` and tables [data], [recipe], [compare]. `--config
FILE` takes any such file; command-line flags override what it says.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from gradlab.errors import ConfigError
from gradlab.families import PAPER
from gradlab.models import info as model_info
from gradlab.models import options as model_options
from gradlab.recipe_keys import short, shown

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


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


SECTIONS = {"data": DataSpec, "recipe": Recipe, "compare": CompareSpec}
TOP_LEVEL = {"preset", "description", *SECTIONS}


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is tuple:
        (elem, _ellipsis) = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, elem) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return {type(None): "nothing", float: "number", int: "integer", bool: "true/false", str: "string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def coerce(cls, values: dict, where: str):
    """Build dataclass `cls` from a dict, naming the file and key of any bad entry."""
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    out = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown key '{key}'; valid keys are: {', '.join(valid)}")
        tp = hints[key]
        if not _type_ok(value, tp):
            raise ConfigError(f"{where}: '{key}' should be {_type_name(tp)}, got {value!r}")
        if typing.get_origin(tp) is tuple or (
            typing.get_origin(tp) in (typing.Union, types.UnionType) and isinstance(value, list)
        ):
            value = tuple(value)
        if tp is float:
            value = float(value)
        out[key] = value
    return cls(**out)


def recipe_from(cls, table: dict, where: str) -> Recipe:
    """A [recipe] table over the paper's defaults. One that sets steps but no milestones gets
    the paper's milestones scaled to its steps, as --steps scales them (not 32000 and 48000
    of a 40-step run); one that sets milestones keeps them, and one beyond its steps is
    refused here, naming the file."""
    recipe = coerce(cls, table, where)
    if "milestones" not in table and "steps" in table and recipe.steps > 0:
        recipe = replace(recipe, milestones=scale_recipe(cls(), recipe.steps).milestones)
    beyond = [m for m in recipe.milestones if m > recipe.steps > 0]
    if "milestones" in table and beyond:
        raise ConfigError(f"{where}: milestone {beyond[0]} is beyond the {recipe.steps} steps of the run; give "
                          f"milestones up to {recipe.steps} (or none: milestones = [])")
    return recipe


def parse_preset(text: str, source: str) -> Preset:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source} is not valid TOML: {e}") from e
    for key in raw:
        if key not in TOP_LEVEL:
            raise ConfigError(f"{source}: unknown key '{key}'; valid top-level keys are: {', '.join(sorted(TOP_LEVEL))}")
    parts = {}
    for section, cls in SECTIONS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: '{section}' should be a table ([{section}])")
        parts[section] = (recipe_from if cls is Recipe else coerce)(cls, table, f"{source} [{section}]")
    name = raw.get("preset", Path(source).stem)
    if not isinstance(name, str):
        raise ConfigError(f"{source}: 'preset' should be a string")
    return Preset(name=name, description=str(raw.get("description", "")), source=source, **parts)


def _preset_files() -> list[tuple[str, str]]:
    """(source, text) of every shipped preset: from a source checkout, else from the wheel."""
    checkout = Path(__file__).resolve().parent.parent / "experiments"
    if checkout.is_dir():
        return [(str(p), p.read_text(encoding="utf-8")) for p in sorted(checkout.glob("*.toml"))]
    root = importlib.resources.files("gradlab.experiments")
    return [(f"gradlab.experiments/{p.name}", p.read_text(encoding="utf-8"))
            for p in sorted(root.iterdir(), key=lambda p: p.name) if p.name.endswith(".toml")]


def presets() -> dict[str, Preset]:
    out = {}
    for source, text in _preset_files():
        p = parse_preset(text, source)
        out[p.name] = p
    return out


def load_preset(name: str | None = None, path: str | Path | None = None) -> Preset:
    """A preset by name (`--preset quick`) or by file (`--config FILE`)."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not a UTF-8 text file; give a TOML preset such as "
                              f"experiments/digits_quick.toml") from None
        return parse_preset(text, str(path))
    available = presets()
    if name is None:
        name = "paper"
    if name not in available:
        raise ConfigError(f"unknown preset '{name}'; available: {', '.join(sorted(available))} (or --config FILE)")
    return available[name]


def scale_recipe(recipe: Recipe, steps: int | None) -> Recipe:
    """Override the run length, scaling milestones, eval and checkpoint cadence with it."""
    if steps is None or steps == recipe.steps:
        return recipe
    if steps <= 0:
        raise ConfigError(f"--steps must be a positive number of iterations, got {steps}")
    k = steps / recipe.steps
    return replace(
        recipe,
        steps=steps,
        milestones=tuple(max(1, round(m * k)) for m in recipe.milestones),
        eval_every=max(1, min(steps, round(recipe.eval_every * k))),
        checkpoint_every=max(1, min(steps, round(recipe.checkpoint_every * k))),
        record_every=max(1, round(recipe.record_every * k)) if recipe.record_every else 0,
    )


MAX_SEED = 2**32 - 1  # numpy's bound; a (seed, step) pair then fits torch's 64-bit generator seed


def check_seed(seed) -> int:
    """A seed as an int: a whole number from 0 to MAX_SEED, else a ConfigError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be a whole number from 0 to {MAX_SEED}, such as 0; got {seed}")
    return seed


def check_experiment(name: str) -> str:
    """An experiment name: one folder inside the runs folder, never a path out of it."""
    if (not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name
            or name.startswith("~")):  # fmt: skip
        raise ConfigError(f"--experiment must be a folder name inside --runs-dir, such as quick-digits; "
                          f"{name!r} is a path (use --runs-dir to choose where runs go)")
    return name


def validate_recipe(recipe: Recipe) -> Recipe:
    floats = {f.name: getattr(recipe, f.name) for f in fields(recipe) if isinstance(getattr(recipe, f.name), float)}
    for name, value in floats.items():
        if not math.isfinite(value):
            what = "learning rate" if name == "lr" else name
            raise ConfigError(f"{what} must be a finite number, got {value}")
    beyond = [m for m in recipe.milestones if m > recipe.steps]
    checks = [
        (recipe.steps > 0, f"steps must be positive, got {recipe.steps}"),
        (recipe.batch_size > 0, f"batch size must be positive, got {recipe.batch_size}"),
        (recipe.lr > 0, f"learning rate must be positive, got {recipe.lr}"),
        (recipe.warmup_lr > 0, f"warmup_lr must be positive, got {recipe.warmup_lr}"),
        (0 < recipe.warmup_exit_err <= 1, f"warmup_exit_err is an error rate in (0, 1], got {recipe.warmup_exit_err}"),
        (0 < recipe.gamma <= 1, f"gamma multiplies the learning rate at each milestone: give a number in (0, 1] "
                                f"such as 0.1, not {recipe.gamma}"),
        (all(m > 0 for m in recipe.milestones), f"milestones are steps, so positive: {recipe.milestones}"),
        (not beyond, f"milestone {beyond[0] if beyond else ''} is beyond the {recipe.steps} steps of the run; "
                     f"give milestones up to {recipe.steps} (or none: milestones = [])"),
        (recipe.eval_every > 0, f"eval_every must be positive, got {recipe.eval_every}"),
        (recipe.checkpoint_every > 0, f"checkpoint_every must be positive, got {recipe.checkpoint_every}"),
        (recipe.keep_checkpoints >= 1, f"keep_checkpoints must be at least 1, got {recipe.keep_checkpoints}"),
        (0 <= recipe.momentum < 1, f"momentum must be in [0, 1), got {recipe.momentum}"),
        (recipe.weight_decay >= 0, f"weight decay must be ≥ 0, got {recipe.weight_decay}"),
        (list(recipe.milestones) == sorted(recipe.milestones), f"milestones must increase: {recipe.milestones}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return recipe


def make_run_spec(
    model: str,
    preset: Preset,
    *,
    seed: int = 0,
    experiment: str | None = None,
    device: str = "auto",
    compile: bool = False,
    compile_mode: str | None = None,
    steps: int | None = None,
    data: dict | None = None,
    recipe: dict | None = None,
    model_options: dict | None = None,
    named_by: tuple[str, ...] = (),
) -> RunSpec:
    """A preset, then command-line overrides (None values mean "not given")."""
    data_spec = replace(preset.data, **{k: v for k, v in (data or {}).items() if v is not None})
    recipe_spec = scale_recipe(preset.recipe, steps)
    recipe_spec = validate_recipe(replace(recipe_spec, **{k: v for k, v in (recipe or {}).items() if v is not None}))
    model_spec = ModelSpec(name=model, **{k: v for k, v in (model_options or {}).items() if v is not None})
    check_model(model_spec)
    if model_spec.freeze not in FREEZE_CHOICES:
        raise ConfigError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}, not {model_spec.freeze!r}")
    if model_spec.freeze != "none" and not model_spec.weights:
        raise ConfigError(f"--freeze {model_spec.freeze} needs pretrained weights: add --weights FILE "
                          f"or --weights {TORCHVISION_WEIGHTS}")
    return RunSpec(
        model=model_spec,
        data=data_spec,
        recipe=recipe_spec,
        seed=check_seed(seed),
        experiment=check_experiment(experiment or f"{preset.name}-{data_spec.name}"),
        device=device,
        compile=compile or compile_mode is not None,
        compile_mode=_compile_mode(compile_mode),
        named_by=tuple(named_by),
    )


def check_model(spec: ModelSpec) -> None:
    """The model name and its options, checked before any run directory exists (ModelError)."""
    meta = model_info(spec.name)
    model_options.checked(meta.family, meta.arch, meta.name, spec.norm, spec.act, spec.drop_path,
                          spec.zero_init_residual)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# where the recorder reduces its statistics (gradlab.recorder.recorder.Recorder's reduce_at)
REDUCE_AT = ("auto", "hooks", "step", "mixed")


def _compile_mode(mode: str | None) -> str:
    if mode is None:
        return "default"
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, not {mode!r} "
                          f"(reduce-overhead uses CUDA graphs)")
    return mode
