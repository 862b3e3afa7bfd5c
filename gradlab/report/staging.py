"""A report folder built beside its place and swapped in whole, so that a report appears
whole or not at all: what a report killed half-way leaves is removed (or undone) by the
next one; files in the output folder that the report does not write are carried over into
the new one, as a report written in place would have left them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from gradlab.errors import ReportError
from gradlab.run_lock import pid_alive

__all__ = ["Stage", "clean_leftovers", "staged_folder"]

LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)$")
REPORT_FOLDERS = ("figures", "data")  # the only folders a report writes


@dataclass
class Stage:
    """Where a report is built (``path``) and how it reaches ``target``: "swap" (built
    beside, swapped in whole), "overlay" (built beside, moved in file by file) or
    "in place"; ``warnings`` say why a report was not swapped in whole."""

    target: Path
    path: Path
    mode: str
    warnings: list[str] = field(default_factory=list)


@contextlib.contextmanager
def staged_folder(out_dir: Path, inputs: Iterable[Path] = ()) -> Iterator[Stage]:
    """Build a report in a fresh folder beside ``out_dir`` and put it in place at the end.

    A report that fails or is stopped (an exception, KeyboardInterrupt included) removes its
    folder, leaving ``out_dir`` as it was; one killed outright leaves it for the next report,
    which removes it first (:func:`clean_leftovers`). Entries of an existing ``out_dir`` that
    the report does not write (the user's files, older figures) are carried into the new one,
    as a report written in place would have left them. ``inputs``: the runs read, which must
    never move.
    """
    target = Path(os.path.realpath(out_dir))
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    stage = _choose_stage(target, [Path(os.path.realpath(p)) for p in inputs])
    if stage.mode == "in place":
        target.mkdir(parents=True, exist_ok=True)
        yield stage
        return
    stage.path.mkdir()
    try:
        yield stage
        _check_types(stage.path, target)
        if stage.mode == "swap":
            _swap_in(stage.path, target)
        else:
            _move_in(stage.path, target)
    finally:
        shutil.rmtree(stage.path, ignore_errors=True)


def _choose_stage(target: Path, inputs: list[Path]) -> Stage:
    """Swap when the old folder holds only files and the report's own folders; else build
    beside and move the files in one by one (or write in place where nothing can be made
    beside), saying why."""
    sibling = target.parent / f".{target.name}.partial-{os.getpid()}"
    if not os.access(target.parent, os.W_OK | os.X_OK):
        why = f"its parent folder {target.parent} is not writable"
        return Stage(target, target, "in place", [_not_whole(target, why)])
    reason = _unswappable(target, inputs) if target.exists() else None
    if reason:
        return Stage(target, sibling, "overlay", [_not_whole(target, reason)])
    return Stage(target, sibling, "swap")


def _not_whole(target: Path, why: str) -> str:
    return (f"the report was written into {target} file by file, not swapped in whole, because {why}; "
            "give --out a folder of its own for a report that appears whole or not at all")


def _unswappable(target: Path, inputs: list[Path]) -> str | None:
    """Why the existing ``target`` must stay where it is, or None when it may be swapped."""
    cwd = Path(os.path.realpath(os.getcwd()))
    if target == cwd or target in cwd.parents:
        return "it holds the working directory"
    if any(p == target or target in p.parents for p in inputs):
        return "it holds runs being reported"
    if os.path.ismount(target):
        return "it is a mount point"
    for entry in os.scandir(target):
        if entry.is_dir(follow_symlinks=False) and entry.name in REPORT_FOLDERS:
            inner = [e.name for e in os.scandir(entry.path) if e.is_dir() or not (e.is_file() or e.is_symlink())]
            if inner:
                return f"{entry.name}/ holds folders that are not the report's ({', '.join(sorted(inner)[:3])})"
        elif entry.is_symlink() and entry.name in REPORT_FOLDERS:
            return f"{entry.name} is a link"
        elif entry.is_dir(follow_symlinks=False) or not (entry.is_file() or entry.is_symlink()):
            return f"it holds {entry.name}, which is not the report's and not a plain file"
    return None


def _check_types(stage: Path, target: Path) -> None:
    """A report file where the old folder has a folder (or the reverse) is an error before
    anything changes: replacing either would delete something that is not the report's."""
    for path in _tree(stage):
        old = target / path.relative_to(stage)
        if os.path.lexists(old) and old.is_dir() != path.is_dir():
            have, want = ("a folder", "a file") if old.is_dir() else ("a file", "a folder")
            raise ReportError(f"{old} is {have} where the report writes {want}; move it away and rerun "
                              f"(nothing in {target} was changed)")


def _tree(folder: Path) -> list[Path]:
    """Every folder and file under ``folder``, parents before their contents (os.walk: the
    report's own walks of its inputs are counted through Path.rglob)."""
    out = []
    for top, dirs, names in os.walk(folder):
        out += [Path(top, n) for n in sorted(dirs) + sorted(names)]
    return out


def _swap_in(stage: Path, target: Path) -> None:
    """Carry the old folder's other entries into ``stage``, then swap: old aside, new in,
    old removed. Between the two renames neither name exists; SIGINT/SIGTERM wait until
    both are done, and a report killed there is undone by the next (:func:`clean_leftovers`)."""
    if not target.exists():
        os.rename(stage, target)
        return
    _carry_over(target, stage)
    for folder in (Path(), *map(Path, REPORT_FOLDERS)):  # the old folders' permissions, as in place
        if (target / folder).is_dir() and (stage / folder).is_dir():
            os.chmod(stage / folder, stat.S_IMODE(os.stat(target / folder).st_mode))
    aside = target.parent / f".{target.name}.old-{os.getpid()}"
    with _signals_held():
        os.rename(target, aside)
        os.rename(stage, target)
    shutil.rmtree(aside, ignore_errors=True)


def _carry_over(old: Path, new: Path) -> None:
    """Link (or copy) into ``new`` every file and link of ``old`` that ``new`` lacks, except
    the temp files of killed atomic writes of the report's own files. ``old`` is untouched."""
    for entry in os.scandir(old):
        dest = new / entry.name
        if entry.is_dir(follow_symlinks=False):
            dest.mkdir(exist_ok=True)
            _carry_over(Path(entry.path), dest)
        elif os.path.lexists(dest) or _killed_write(entry.name, new):
            continue
        elif entry.is_symlink():
            os.symlink(os.readlink(entry.path), dest)
        else:
            try:
                os.link(entry.path, dest)
            except OSError:
                shutil.copy2(entry.path, dest)


def _killed_write(name: str, folder: Path) -> bool:
    """A temp file of gradlab.file_io.atomic_write (".<file>.<random>.tmp") of a file the
    report wrote into ``folder``: what a killed write leaves behind."""
    m = re.match(r"^\.(.+)\.[^.]+\.tmp$", name)
    return bool(m) and (folder / m.group(1)).is_file()


def _move_in(stage: Path, target: Path) -> None:
    """Move the report's files into ``target`` one by one, each replacing its old version
    in one rename; everything else in ``target`` is left alone."""
    for path in _tree(stage):
        if path.is_file():
            dest = target / path.relative_to(stage)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM held back (delivered when the block ends), where the platform can."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def clean_leftovers(target: Path) -> list[Path]:
    """Undo what killed reports left beside ``target``: an old folder set aside with no new
    one in its place is put back; other old folders and unfinished new ones are removed.
    Only those of dead processes are touched. Returns the paths removed or restored."""
    found = []
    for entry in os.scandir(target.parent):
        m = LEFTOVER.match(entry.name)
        if m and m["name"] == target.name and entry.is_dir(follow_symlinks=False) and not _alive(int(m["pid"])):
            found.append((m["kind"], Path(entry.path)))
    done = []
    for kind, path in sorted(found, key=lambda f: f[0] != "old"):  # old ones first: one may be put back
        try:
            if kind == "old" and not os.path.lexists(target):
                os.rename(path, target)
            else:
                shutil.rmtree(path)
        except OSError:
            continue  # not ours to remove (permissions): it stays, and never stops a report
        done.append(path)
    return done


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (ours counts: a leftover under our pid is not a leftover)."""
    return pid == os.getpid() or pid_alive(pid)
