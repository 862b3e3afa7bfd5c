"""One writer per folder: a lock file holding pid, host and start time. Trainers lock their
run directory, `gradlab.watch` its run, `compare` its report folder; a second process is
refused (RunLockedError) or, where it asks, waits until the first is done."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from gradlab.errors import RunLockedError
from gradlab.file_io import NOT_WRITABLE, not_writable

LOCK = "lock"


def pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; a number beyond any pid
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """A lock file ``name`` in ``folder`` (a run directory: ``lock``).

    A lock left by a dead process on this host is stale and taken over. Folders the lock
    had to create are removed on release if nothing else was written into them (a run
    rejected before it started leaves no empty run directory behind).
    """

    def __init__(self, folder: Path, name: str = LOCK, doing: str = "trained"):
        self.path = Path(folder) / name
        self.doing = doing  # what the holder does to the folder, for messages: "trained", "written"
        self.held = False
        self.created: list[Path] = []  # folders made by acquire, deepest first

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    @staticmethod
    def _stale(owner: dict) -> bool:
        """Left by a process on this host that is gone."""
        return bool(owner) and owner.get("host") == socket.gethostname() and not pid_alive(owner.get("pid"))

    def holder(self) -> dict | None:
        """Who holds the lock now (pid, host, since), or None when it is free or stale."""
        if not self.path.exists():
            return None
        owner = self._owner()
        if self._stale(owner):
            return None
        return owner or {"pid": "?", "host": "?", "since": "?"}

    def busy(self, owner: dict) -> str:
        """What to say when ``owner`` (holder()'s answer) holds the folder."""
        return (f"{self.path.parent.name} is being {self.doing} by pid {owner.get('pid')} on {owner.get('host')} "
                f"(since {owner.get('since')}); wait for it, or delete {self.path} if that process is gone")

    def acquire(self) -> RunLock:
        try:
            return self._acquire()
        except OSError as e:  # an immutable or read-only folder: one line, not a traceback
            if e.errno in NOT_WRITABLE:
                raise not_writable(self.path, e) from None
            raise

    def _acquire(self) -> RunLock:
        missing = [d for d in (self.path.parent, *self.path.parent.parents) if not d.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.created = missing
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": stamp}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self._owner()
                if self._stale(owner):
                    self.path.unlink(missing_ok=True)
                    continue
                if not owner:  # being written right now, or damaged
                    raise RunLockedError(f"{self.path.parent} is locked ({self.path} is unreadable); "
                                         f"if no gradlab process is using it, delete {self.path}")
                raise RunLockedError(self.busy(owner))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise RunLockedError(f"could not take over the stale lock {self.path}; delete it and retry")

    def wait_free(self, notify: Callable[[str], None] = lambda message: None, poll_s: float = 2.0) -> bool:
        """Block until no live process holds the lock (without taking it); True if it had
        to wait. ``notify`` hears once whom it waits for."""
        waited = False
        while (owner := self.holder()) is not None:
            if not waited:
                notify(f"waiting for {self.path.parent.name}: being {self.doing} by pid {owner.get('pid')} on "
                       f"{owner.get('host')} (since {owner.get('since')})")
                waited = True
            time.sleep(poll_s)
        return waited

    def acquire_waiting(self, notify: Callable[[str], None] = lambda message: None, poll_s: float = 2.0) -> bool:
        """Take the lock, waiting while another live process holds it; True if it waited."""
        waited = False
        while True:
            try:
                self.acquire()
                return waited
            except RunLockedError:
                waited = self.wait_free(notify, poll_s) or waited

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
        for folder in self.created:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
        self.created = []

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
