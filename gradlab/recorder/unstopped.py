"""Runs whose recorder was never stopped are closed, not lost.

A script that watches with a ``run_dir`` and never calls ``rec.stop()`` would end with its
last rows still in the device buffer and status.json saying "running". Every recorder
that writes its own run directory is registered here while it runs; when the process
ends (normally, or by an exception nothing caught) or the recorder is garbage-collected,
its rows are written and its status says how the run ended, and one warning names the
missing ``stop()``. A process killed by a signal (SIGKILL, an unhandled SIGTERM) runs no
Python at all: its status stays "running", which readers call crashed.
"""

from __future__ import annotations

import atexit
import os
import sys
import warnings
import weakref

__all__ = ["close", "forget", "register", "uncaught"]

_LIVE: "weakref.WeakSet" = weakref.WeakSet()  # started recorders with a run directory of their own
_UNCAUGHT: list[BaseException] = []  # the exception that ended the process (sys.excepthook saw it)
_installed = False

AT_EXIT = "the process ended"
COLLECTED = "the recorder was garbage-collected"


def register(rec) -> None:
    """Close ``rec`` at exit unless it is stopped before (installs the exit hooks once)."""
    global _installed
    if not _installed:
        _installed = True
        _chain_excepthook()
        atexit.register(_at_exit)
    _LIVE.add(rec)
    rec._started_in = os.getpid()  # a forked child that exits normally must not close its parent's runs


def forget(rec) -> None:
    """``rec`` was stopped: nothing left to do at exit."""
    _LIVE.discard(rec)


def uncaught() -> BaseException | None:
    """The exception that is ending the process, if one is (KeyboardInterrupt included)."""
    return _UNCAUGHT[-1] if _UNCAUGHT else getattr(sys, "last_value", None)


def _chain_excepthook() -> None:
    previous = sys.excepthook

    def hook(kind, value, tb):
        _UNCAUGHT.append(value)
        previous(kind, value, tb)

    sys.excepthook = hook


def _at_exit() -> None:
    error = uncaught()
    for rec in list(_LIVE):
        close(rec, AT_EXIT, error)


def close(rec, how: str, error: BaseException | None = None) -> None:
    """Stop ``rec``, which its owner never stopped, and say so in one line (``how``: what
    ended it). Never raises: it runs at exit or in a finalizer."""
    _LIVE.discard(rec)  # (a collected recorder has left the set already)
    if getattr(rec, "_started_in", None) != os.getpid():  # not registered, or by the process this one forked from
        return
    where = rec.run_dir
    try:
        state = rec._close_unstopped(how, error)
    except Exception as e:  # a full disk at exit: the writer marked the run failed if it could
        warnings.warn(f"gradlab: {how} without rec.stop(), and the run in {where} could not be closed: "
                      f"{type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)  # fmt: skip
        return
    warnings.warn(f"gradlab: {how} without rec.stop(); the run in {where} was written and marked {state}. "
                  "Call rec.stop() when training ends, or use `with gradlab.watch(...) as rec:`.",
                  RuntimeWarning, stacklevel=2)  # fmt: skip
