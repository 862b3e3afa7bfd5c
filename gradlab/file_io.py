"""The small files of run and analysis folders: written atomically, read with clear errors.

Every write goes to a temp file beside its target and is renamed into place, so a reader
or a crash never sees half a file; a full disk is one DiskFullError naming the file and
the free space. Reads name the damaged file instead of raising the parser's error. Never
imports torch (the report side reads through here).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import pandas as pd

from gradlab.errors import DiskFullError, RunDirError

__all__ = ["NO_SPACE", "NOT_WRITABLE", "arrow_path", "atomic_write", "not_writable", "read_json", "read_parquet", "write_json",
           "write_parquet"]

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a full disk, a quota, a file-size limit
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)  # permissions, an immutable file, a read-only mount


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path) on a temp file beside `path`, then rename it into place: the
    old file stays whole until the new one is. A full disk is a DiskFullError naming the
    file and the free space (the temp file is removed, so that space is given back)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in NO_SPACE + NOT_WRITABLE:
            raise _write_error(path, e) from None
        raise


def arrow_path(path) -> str:
    """``path`` as pyarrow wants it, UTF-8 text, also where Python's file system encoding is
    ASCII (LC_ALL=C with PYTHONUTF8=0), which gives non-ASCII names as surrogate escapes
    that pyarrow cannot encode. (Python's own open() takes them as they are.)"""
    return os.fsencode(path).decode("utf-8", "surrogateescape")


def not_writable(path: Path, error: OSError) -> RunDirError:
    """One line for a file gradlab may not write (permissions, an immutable file, a
    read-only mount): which file, why, and how to check."""
    return RunDirError(f"cannot write {path}: {error.strerror}; check its permissions and attributes (`ls -l`, "
                       f"`lsattr`: an immutable file needs `chattr -i`) or choose another folder: what was written "
                       f"before is intact")  # fmt: skip


def _write_error(path: Path, error: OSError) -> OSError | RunDirError:
    if error.errno in NO_SPACE:
        return _no_space(path, error)
    return not_writable(path, error) if error.errno in NOT_WRITABLE else error


def _no_space(path: Path, error: OSError) -> DiskFullError:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MB free there, not enough for it"
    except OSError:
        free = "free space unknown"
    return DiskFullError(f"cannot write {path}: {error.strerror} ({free}); free some space or choose another "
                         f"folder, then rerun: what was written before is intact")


def write_json(path: Path, obj: dict) -> None:
    def _write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, _write)


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_parquet(arrow_path(tmp), index=False))


def read_json(path: Path, fields: dict[str, type | tuple[type, ...]] | None = None) -> dict:
    """A JSON object from ``path``; ``fields``: key -> the type its value must have when
    present. Anything else is a RunDirError naming the file and what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except UnicodeDecodeError as e:
        raise RunDirError(f"{path} is not UTF-8 text (byte {e.start}); the file is damaged") from e
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); the file is damaged") from e
    except OSError as e:
        raise RunDirError(f"cannot read {path}: {e.strerror}") from e
    if not isinstance(obj, dict):
        raise RunDirError(f"{path} should hold a JSON object, found {type(obj).__name__}")
    for key, kind in (fields or {}).items():
        value = obj.get(key)
        if key in obj and (not isinstance(value, kind) or isinstance(value, bool) and bool not in _tuple(kind)):
            raise RunDirError(f"{path}: '{key}' is {value!r}, not {_kind_name(kind)}; the file is damaged")
    return obj


def _tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind) -> str:
    names = {dict: "an object", list: "a list", str: "text", int: "a whole number", float: "a number"}
    return " or ".join(names.get(k, k.__name__) for k in _tuple(kind))


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(arrow_path(path))
    except Exception as e:  # pyarrow raises several unrelated types for damaged files
        raise RunDirError(f"{path} cannot be read as Parquet ({type(e).__name__}: {e}); the file is damaged") from e
