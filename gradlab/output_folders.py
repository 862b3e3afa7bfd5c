"""Output folders, checked before any work starts: a folder, or a path that can become one
in a writable place. A bad one is a clear error naming the option, not a failure after
hours of training."""

from __future__ import annotations

import os
from pathlib import Path

from gradlab.errors import ConfigError, GradlabError


def check_output_folder(path: str | Path, option: str, error: type[GradlabError] = ConfigError) -> Path:
    """``path`` (user-expanded) if something may be written under it; else ``error`` saying
    which ``option`` to change and why."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise error(f"{option} {path} is an existing file, not a folder; give a folder (it is created if missing)")
    for parent in (path, *path.parents):
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise error(f"cannot create {option} {path}: it lies under {parent}, which is a file; give a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            why = "lies on a read-only file system" if _read_only(parent) else "is not writable by you"
            raise error(f"cannot write {option} {path}: {parent} {why}; pass another folder")
        break
    return path


def _read_only(folder: Path) -> bool:
    """Whether ``folder`` lies on a file system mounted read-only."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False
