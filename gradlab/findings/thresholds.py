"""The thresholds of the rules: each with its default and the source of that default, and
the user's overrides from the command line (``rule.key=value``) or a TOML file::

    [vanishing_gradients]
    factor = 1e4          # a threshold of that rule
    [loss_spike]
    enabled = false       # a rule switched off

A key or rule that does not exist is an error naming the ones that do, never ignored.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gradlab.errors import ConfigError

__all__ = ["Settings", "Threshold"]


@dataclass(frozen=True)
class Threshold:
    """A rule's number: its default, what it means, and where the default comes from (a
    paper, a documented default of another tool, or gradlab's calibration on healthy runs)."""

    default: float
    meaning: str
    source: str


class Settings:
    """The thresholds in force for every rule (``rules``: name -> Rule), with overrides."""

    def __init__(self, rules: dict):
        self.rules = rules
        self.values = {name: {k: t.default for k, t in rule.thresholds.items()} for name, rule in rules.items()}
        self.off: set[str] = set()

    def __getitem__(self, rule: str) -> dict[str, float]:
        return self.values[rule]

    def enabled(self, rule: str) -> bool:
        return rule not in self.off

    def set(self, rule: str, key: str, value, origin: str) -> None:
        """Override one threshold (or ``enabled``), checked: ``origin`` names where it came from."""
        if rule not in self.rules:
            raise ConfigError(f"{origin}: no rule named {rule!r}; the rules are {', '.join(sorted(self.rules))}")
        if key == "enabled":
            if not isinstance(value, bool):
                raise ConfigError(f"{origin}: {rule}.enabled must be true or false, not {value!r}")
            (self.off.discard if value else self.off.add)(rule)
            return
        known = self.rules[rule].thresholds
        if key not in known:
            keys = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"{origin}: rule {rule} has no threshold {key!r}; its thresholds: {keys} (and enabled)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{origin}: {rule}.{key} must be a finite number, not {value!r}")
        self.values[rule][key] = float(value)

    def apply_text(self, text: str) -> None:
        """One ``rule.key=value`` from the command line (value: a number, true or false)."""
        name, sep, raw = text.partition("=")
        rule, dot, key = name.strip().partition(".")
        if not sep or not dot or not rule or not key:
            raise ConfigError(f"--set {text!r}: write rule.key=value, e.g. --set vanishing_gradients.factor=1e4")
        raw = raw.strip()
        value = {"true": True, "false": False}.get(raw.lower())
        if value is None:
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"--set {text!r}: {raw!r} is not a number (nor true/false)") from None
        self.set(rule, key, value, f"--set {text}")

    def apply_file(self, path: Path) -> None:
        """A TOML file of [rule] tables."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: cannot be read as TOML ({e}); see `gradlab check --rules` for the keys") from None
        for rule, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: {rule} = {table!r} must be a [{rule}] table of thresholds")
            for key, value in table.items():
                self.set(rule, key, value, str(path))
