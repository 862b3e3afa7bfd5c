"""Run configuration: a preset and command-line flags into one checked RunSpec.

The specs themselves (frozen dataclasses) live in gradlab.specs and the presets (TOML
files) in gradlab.presets; both are re-exported here, so that `from gradlab.config import
...` names everything a run is configured with. Checks here say what to do about a bad
value before any run directory exists.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace

from gradlab.errors import ConfigError
from gradlab.models import info as model_info
from gradlab.models import options as model_options
from gradlab.presets import (SECTIONS, TOP_LEVEL, coerce, load_preset, parse_preset, presets, recipe_from,
                             scale_recipe)
from gradlab.specs import (FREEZE_CHOICES, TORCHVISION_WEIGHTS, CompareSpec, DataSpec, ModelSpec, Preset, Recipe,
                           RunSpec, recipe_tag)

__all__ = ["COMPILE_MODES", "FREEZE_CHOICES", "MAX_SEED", "REDUCE_AT", "SECTIONS", "TOP_LEVEL", "TORCHVISION_WEIGHTS",
           "CompareSpec", "DataSpec", "ModelSpec", "Preset", "Recipe", "RunSpec", "check_experiment", "check_model",
           "check_seed", "coerce", "load_preset", "make_run_spec", "parse_preset", "presets", "recipe_from",
           "recipe_tag", "scale_recipe", "validate_recipe"]  # fmt: skip


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
