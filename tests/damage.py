"""Test fixtures: damaged files, and a small experiment of synthetic runs."""

from pathlib import Path

from gradlab.bench.synthetic_runs import make_run
from gradlab.families import PLAIN, RESNET


def make_experiment(root: Path, depths=(20, 56), seeds=(0,), steps: int = 400, **kw) -> list[Path]:
    """plain and ResNet runs at every depth and seed with the default (degrading) finals."""
    return [make_run(root, family, d, s, steps, **kw) for family in (PLAIN, RESNET) for d in depths for s in seeds]


def truncate_file(path: Path, keep: float = 0.5) -> None:
    """Damage a file the way a killed writer or a full disk would."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def break_json(path: Path) -> None:
    Path(path).write_text('{"format_version": 1, "name": ')
