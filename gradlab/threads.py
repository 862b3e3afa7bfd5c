"""How many CPU threads a run trains with. OpenMP threads of one step wait for each other
at every parallel region; when another process keeps a core busy, the thread that shares
it holds the others up at each of them, and a step can take several times longer than
with one thread fewer. So, unless told (--threads, GRADLAB_THREADS or OMP_NUM_THREADS),
the commands train with the cores other processes leave free, and say so once.
Measurements: `gradlab bench busy`, and docs/reliability.md."""

from __future__ import annotations

import os
import time

from gradlab.errors import ConfigError

ENV = "GRADLAB_THREADS"


def busy_cores(window_s: float = 0.3) -> float | None:
    """Cores kept busy by all processes over ``window_s`` seconds (from /proc/stat, while
    this process sleeps); None where that cannot be read."""

    def sample():
        with open("/proc/stat", encoding="ascii", errors="replace") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, all

    try:
        idle0, all0 = sample()
        time.sleep(window_s)
        idle1, all1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if all1 <= all0:
        return None
    return (1 - (idle1 - idle0) / (all1 - all0)) * (os.cpu_count() or 1)


def requested_threads(threads: int | None = None) -> int | None:
    """The thread count the user asked for: --threads, else GRADLAB_THREADS, else
    OMP_NUM_THREADS; None when nobody did."""
    for value, where in ((threads, "--threads"), (os.environ.get(ENV), ENV), (os.environ.get("OMP_NUM_THREADS"),
                                                                             "OMP_NUM_THREADS")):  # fmt: skip
        if value in (None, ""):
            continue
        try:
            n = int(value)
        except (TypeError, ValueError):
            n = 0
        if n < 1:
            raise ConfigError(f"{where} must be a whole number of threads >= 1, such as 2; got {value!r}")
        return n
    return None


def choose_threads(threads: int | None, default: int) -> tuple[int, str | None]:
    """(threads to train with, a note to say once or None). ``default``: torch's count
    (the physical cores). Asked for: that. Else ``default``, less the cores that other
    processes keep busy right now."""
    asked = requested_threads(threads)
    if asked is not None:
        return asked, None
    return free_threads(default)


def free_threads(default: int) -> tuple[int, str | None]:
    """(``default`` less the cores other processes keep busy right now, at least 1; a note
    to say once when that is fewer than ``default``, else None)."""
    busy = busy_cores()
    cores = os.cpu_count() or default
    if busy is None:
        return default, None
    free = max(1, min(default, round(cores - busy)))
    if free >= default:
        return default, None
    return free, (f"the machine is busy (about {busy:.1f} of {cores} cores in use by other processes): training "
                  f"with {free} thread(s) instead of {default}, since threads on busy cores hold the others up; "
                  f"--threads {default} uses them all anyway (and the last digits of results follow the "
                  f"thread count)")
