"""The progress bar of long work: on stderr, shown on a terminal unless asked otherwise."""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, unit: str, show: bool | None = None, initial: int = 0):
    """A tqdm bar on stderr, or None. show=None: only when stderr is a terminal."""
    if not (sys.stderr.isatty() if show is None else show):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                file=sys.stderr)
