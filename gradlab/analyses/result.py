"""What an at-init analysis returns: its tables and settings, ready to become a folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gradlab.analysis_dirs import write_analysis

__all__ = ["ProbeResult"]


@dataclass
class ProbeResult:
    """Tidy tables of one analysis (``kind`` as in gradlab.analysis_dirs.KINDS).

    Kept in memory so that Python callers can look at the numbers without writing
    anything; :meth:`save` writes the folder that `gradlab report` reads.
    """

    kind: str
    tables: dict[str, pd.DataFrame]
    settings: dict
    env: dict = field(default_factory=dict)

    def __getitem__(self, table: str) -> pd.DataFrame:
        return self.tables[table]

    def save(self, out_dir: Path | str) -> Path:
        """Write the analysis folder (refuses a folder holding anything else)."""
        return write_analysis(Path(out_dir), self.kind, self.settings, self.tables, self.env)
