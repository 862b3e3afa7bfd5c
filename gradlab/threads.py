"""How many CPU threads a run trains with. OpenMP threads of one step wait for each other
at every parallel region; when another process keeps a core busy, the thread that shares
it holds the others up at each of them, and a step can take several times longer than
with one thread fewer. So, unless told (--threads, GRADLAB_THREADS or OMP_NUM_THREADS),
the commands train with the cores other processes leave free, and say so once; asked for
more threads than the cores this process can use, they train with as many as the cores
and warn once (the extra threads could only take turns on the cores).
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


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or taskset's share),
    else the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _asked(threads: int | None) -> tuple[int, str] | None:
    """(count, where it was given) of --threads, else GRADLAB_THREADS, else OMP_NUM_THREADS."""
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
        return n, where
    return None


def requested_threads(threads: int | None = None) -> int | None:
    """The thread count the user asked for: --threads, else GRADLAB_THREADS, else
    OMP_NUM_THREADS; None when nobody did."""
    asked = _asked(threads)
    return None if asked is None else asked[0]


def capped_threads(n: int, where: str = "--threads") -> tuple[int, str | None]:
    """(threads to train with, a warning or None) for ``n`` threads asked for by ``where``.
    More threads than usable cores only take turns on them and wait for each other at every
    parallel region (5 steps took 115 s with 1000 threads on 2 cores, 15.6 s with 2), so the
    count is capped at the cores, and the warning says how to ask for no more."""
    cores = usable_cores()
    if n <= cores:
        return n, None
    given, fix = (f"--threads {n}", f"--threads {cores}") if where == "--threads" else (f"{where}={n}",
                                                                                        f"{where}={cores}")
    return cores, (f"{given} is more than the {cores} cores this process can use: training with {cores} "
                   f"threads, since threads beyond the cores wait for each other at every step; give {fix} "
                   f"or fewer")


def choose_threads(threads: int | None, default: int) -> tuple[int, str | None]:
    """(threads to train with, a line to say once or None: "note: ..." or "warning: ...").
    ``default``: torch's count (the physical cores). Asked for: that, at most the usable
    cores. Else ``default``, less the cores that other processes keep busy right now."""
    asked = _asked(threads)
    if asked is not None:
        n, warning = capped_threads(*asked)
        return n, warning and f"warning: {warning}"
    n, note = free_threads(default)
    return n, note and f"note: {note}"


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
