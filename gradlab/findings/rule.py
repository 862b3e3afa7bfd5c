"""A rule: what it detects, the statistics it reads, its thresholds (each with the source of
its default), and the function that turns one run into findings (``check``), or runs taken
together, e.g. the depths of one family (``check_group``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from gradlab.findings.finding import Finding
from gradlab.findings.thresholds import Threshold
from gradlab.findings.view import RunView

__all__ = ["Rule"]


@dataclass(frozen=True)
class Rule:
    name: str
    detects: str  # one sentence
    reads: tuple[str, ...]  # the statistics (and "loss", "status") it reads
    thresholds: dict[str, Threshold]
    check: Callable[[RunView, dict[str, float]], list[Finding]] | None = None
    check_group: Callable[[list[RunView], dict[str, float]], list[Finding]] | None = None
