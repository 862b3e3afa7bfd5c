"""Presets: TOML files of data, recipe and compare settings, read into checked specs.

A preset is a TOML file in `experiments/` (shipped in the wheel as gradlab.experiments)
with a top-level `preset = "<name>"` and tables [data], [recipe], [compare]. `--config
FILE` takes any such file; command-line flags override what it says (gradlab.config).
Every bad key or value is refused with the file and key named.
"""

from __future__ import annotations

import importlib.resources
import sys
import types
import typing
from dataclasses import fields, replace
from pathlib import Path

from gradlab.errors import ConfigError
from gradlab.specs import CompareSpec, DataSpec, Preset, Recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["SECTIONS", "TOP_LEVEL", "coerce", "load_preset", "parse_preset", "presets", "recipe_from",
           "scale_recipe"]  # fmt: skip


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
