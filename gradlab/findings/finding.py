"""What a rule concludes about a run: a Finding, and the severities it can have.

A finding is a claim with its evidence: which rule, how bad, in which run, *where* along
depth (layer names with their positions), *when* (the first step and the range), the numbers
that crossed the line and the line itself, one sentence of explanation, one of what to try,
and the report figure that shows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["ERROR", "INFO", "SEVERITIES", "WARNING", "Finding", "Place", "layers", "severity_rank"]

INFO, WARNING, ERROR = "info", "warning", "error"
SEVERITIES = (INFO, WARNING, ERROR)  # in rising order


def layers(n: int) -> str:
    """"1 layer", "3 layers"."""
    return f"{n} layer" if n == 1 else f"{n} layers"


def severity_rank(severity: str) -> int:
    """0 for info, 1 for warning, 2 for error (a ValueError for anything else)."""
    return SEVERITIES.index(severity)


@dataclass(frozen=True)
class Place:
    """A layer and its position along depth (0: nearest the input), as the recorder numbered it."""

    layer: str
    position: int


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    run: str
    summary: str  # one line: what is wrong, where and since when
    evidence: str  # the numbers that crossed the line, and the line
    explanation: str
    suggestion: str
    where: tuple[Place, ...] = ()
    first_step: int | None = None
    last_step: int | None = None
    figure: str | None = None  # the report figure that shows it (file stem), when one does
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        severity_rank(self.severity)

    @property
    def when(self) -> str:
        """"step 40", "steps 40–90", or "" when the rule has no time."""
        if self.first_step is None:
            return ""
        if self.last_step is None or self.last_step == self.first_step:
            return f"step {self.first_step:,}"
        return f"steps {self.first_step:,}–{self.last_step:,}"

    @property
    def where_text(self) -> str:
        """The layers, shallowest first, at most four named."""
        if not self.where:
            return ""
        names = [f"{p.layer} (#{p.position})" for p in self.where[:4]]
        more = len(self.where) - 4
        return ", ".join(names) + (f" and {more} more" if more > 0 else "")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["where"] = [asdict(p) for p in self.where]
        return out
