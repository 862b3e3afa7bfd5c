"""Sweeps of recipe values: `--lr 0.01,0.03,0.1`, `--set weight_decay=1e-4,5e-4`.

A sweep maps recipe keys (gradlab.config.Recipe) to the values to try; `gradlab compare`
crosses its grid with families, depths, seeds and build options, and names each run by
the values its sweep varies (gradlab.config.RunSpec.named_by). Only recipe keys that
change what is trained can be swept: a sweep over anything else is refused before a run
starts. A family is fairly compared only at a learning rate tuned for it, on held-out
data (He et al. 2015 §4.2 tune on 45k/5k of CIFAR-10's training images).
"""

from __future__ import annotations

import itertools
import typing
from dataclasses import fields

from gradlab.config import Recipe
from gradlab.errors import ConfigError
from gradlab.recipe_keys import BOOKKEEPING as NOT_SWEPT
from gradlab.recipe_keys import shown
# compare's own flags for the most swept keys (any other: --set KEY=V1,V2)
FLAGS = {"lr": "--lr", "weight_decay": "--weight-decay", "batch_size": "--batch-size", "warmup_lr": "--warmup-lr",
         "steps": "--steps"}


def sweepable() -> tuple[str, ...]:
    """The recipe keys a sweep may vary."""
    return tuple(f.name for f in fields(Recipe) if f.name not in NOT_SWEPT)


def check_key(key: str, flag: str = "--set") -> str:
    """A sweepable recipe key, else a ConfigError naming the ones that are."""
    if key in NOT_SWEPT:
        raise ConfigError(f"{flag} {key}: {key} changes what is written, not what is trained, so it cannot be "
                          f"swept; sweep one of: {', '.join(sweepable())}")
    if key not in sweepable():
        raise ConfigError(f"{flag} {key}: '{key}' is not a recipe key, and only recipe values can be swept; "
                          f"sweep one of: {', '.join(sweepable())} (families, depths and seeds have their own flags)")
    return key


def parse_values(key: str, text: str, flag: str) -> tuple:
    """'0.01,0.03,0.1' -> (0.01, 0.03, 0.1), typed as the recipe key is (milestones: 150/225)."""
    tp = typing.get_type_hints(Recipe)[key]
    raw = [t.strip() for t in str(text).split(",")]
    if not all(raw):
        raise ConfigError(f"{flag.rstrip('=')} has an empty value in '{text}'; give values separated by commas, "
                          f"such as {_example(tp, flag)}")
    values = tuple(_value(t, tp, flag) for t in raw)
    if len(set(values)) != len(values):
        raise ConfigError(f"{flag.rstrip('=')} lists a value twice: {text}")
    return values


def _value(text: str, tp, flag: str):
    try:
        if tp is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if typing.get_origin(tp) is tuple:
            return tuple(int(v) for v in text.split("/") if v)
        return tp(text)
    except ValueError:
        raise ConfigError(f"{flag.rstrip('=')}: '{text}' is not a {_type_word(tp)}; give values separated by "
                          f"commas, such as {_example(tp, flag)}") from None


def _type_word(tp) -> str:
    return {float: "number", int: "whole number", bool: "true or false"}.get(tp, "list of steps like 150/225")


def _example(tp, flag: str) -> str:
    """'--lr 0.01,0.1' or, for --set, '--set lr=0.01,0.1'."""
    values = {float: "0.01,0.1", int: "64,128", bool: "true,false"}.get(tp, "150/225,100/200")
    return f"{flag}{values}" if flag.endswith("=") else f"{flag} {values}"


def parse_set(items) -> dict[str, tuple]:
    """--set KEY=V1,V2 (repeatable) -> {key: values}, each key checked as a recipe key."""
    out: dict[str, tuple] = {}
    for item in items or ():
        key, sep, values = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item}: give KEY=VALUES, such as --set weight_decay=1e-4,5e-4")
        check_key(key)
        if key in out:
            raise ConfigError(f"--set {key} is given twice; list all its values once: --set {key}=V1,V2")
        out[key] = parse_values(key, values, f"--set {key}=")
    return out


def from_options(flags: dict[str, str | None], sets=()) -> dict[str, tuple]:
    """The sweep of compare's flags ({'lr': '0.01,0.1', ...}; None: not given) and --set items;
    a key given by both is refused."""
    sweep = {key: parse_values(key, text, FLAGS[key]) for key, text in flags.items() if text is not None}
    for key, values in parse_set(sets).items():
        if key in sweep:
            raise ConfigError(f"{key} is given by {FLAGS[key]} and by --set; give it once")
        sweep[key] = values
    return sweep


def varied(sweep: dict[str, tuple]) -> tuple[str, ...]:
    """The keys a sweep varies (more than one value): those the run names carry."""
    return tuple(k for k, v in sweep.items() if len(v) > 1)


def grid(sweep: dict[str, tuple]) -> list[dict]:
    """Every combination of the sweep's values ([{}] for no sweep), in the order given."""
    keys = list(sweep)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))]


def describe(sweep: dict[str, tuple]) -> str:
    """'lr 0.01, 0.03, 0.1 x weight_decay 0.0001, 0.0005' for the plan line ('' without a sweep)."""
    return " x ".join(f"{k} {', '.join(shown(v) for v in vs)}" for k, vs in sweep.items() if len(vs) > 1)
