"""Where a report goes and how its files are written: formats, the output folder, writers.

Every file is written atomically (gradlab.file_io.atomic_write); the whole report is built
beside its folder and swapped in at the end (gradlab.report.staging).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Iterable

import pandas as pd

from gradlab import runs as R
from gradlab.errors import ReportError
from gradlab.file_io import atomic_write
from gradlab.output_folders import check_output_folder

SUPPORTED_FORMATS = ("pdf", "png", "svg")
DEFAULT_FORMATS = ("pdf", "png")


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """Formats from "pdf,png" or ("pdf", "png"); an unknown format is an error."""
    if isinstance(formats, str):
        formats = formats.split(",")
    out = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    bad = [f for f in out if f not in SUPPORTED_FORMATS]
    if bad or not out:
        raise ReportError(
            f"unknown figure format(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(SUPPORTED_FORMATS)}, "
            "comma-separated (e.g. --formats pdf,png)"
        )
    return out


def check_out_dir(out_dir: Path) -> Path:
    """``out_dir`` if a report may be written there (a folder, or a path that can become one)."""
    return check_output_folder(out_dir, "--out", ReportError)


def default_out_dir(runs: list[R.Run], root: Path = Path("reports")) -> Path:
    """reports/<experiment> when every run shares one experiment, else reports/report."""
    names = {str(r.spec.get("experiment") or "") for r in runs}
    name = names.pop() if len(names) == 1 else ""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "report"
    return Path(root) / name


def write_text(path: Path, text: str, files: list[Path]) -> None:
    """Write ``text`` to ``path`` (UTF-8) and note the file in ``files``."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)
    files.append(path)


def write_csv(path: Path, frame: pd.DataFrame, files: list[Path]) -> None:
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    write_text(path, buf.getvalue(), files)


def save_figure(fig, out_dir: Path, name: str, formats, dpi: int, files: list[Path]) -> dict[str, Path]:
    """Save ``fig`` as <out_dir>/figures/<name>.<fmt> for each format; the paths by format."""
    saved = {}
    # lay the figure out once: the first save runs constrained layout, later saves reuse it
    for i, fmt in enumerate(formats):
        if i == 1:
            fig.set_layout_engine("none")
        path = out_dir / "figures" / f"{name}.{fmt}"
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        atomic_write(path, lambda tmp, f=fmt: fig.savefig(tmp, format=f, dpi=dpi, metadata=metadata))
        files.append(path)
        saved[fmt] = path
    return saved


# ---------------------------------------------------------------------------
# the output folder, built beside and swapped in whole
# ---------------------------------------------------------------------------
