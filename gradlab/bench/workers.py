"""Worker processes that share one device, for the benchmarks that train several runs at once.

Each worker is a fresh "spawn" process (CUDA cannot be forked) running ``body(conn, *args)``
with a pipe to the parent. A failure in a worker comes back to the parent as an error
naming the worker, with the worker's traceback, instead of leaving the parent waiting.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from typing import Any, Callable

from gradlab.errors import GradlabError

__all__ = ["WorkerPool"]


class _Failure:
    """What a worker sends instead of its answer when its body raised: the traceback, and the
    message of a user's mistake (a GradlabError, whose message says the fix)."""

    def __init__(self, text: str, message: str | None = None):
        self.text = text
        self.message = message


def _serve(conn, body: Callable, args: tuple) -> None:
    try:
        body(conn, *args)
    except Exception as e:  # sent to the parent, which raises it there (printed once, by the parent)
        try:
            conn.send(_Failure(traceback.format_exc(), str(e) if isinstance(e, GradlabError) else None))
        except (BrokenPipeError, OSError):
            pass
    finally:
        conn.close()


class WorkerPool:
    """Live worker processes, one per entry of ``args``: worker i runs ``body(conn, *args[i])``.

    ``body`` must be a module-level function (spawn pickles it by name). The parent talks
    to worker i with ``send(i, ...)`` / ``recv(i)``; ``close()`` sends None to each (a
    body's sign to return) and waits for them.
    """

    def __init__(self, body: Callable, args: list[tuple], names: list[str] | None = None):
        ctx = mp.get_context("spawn")
        self.names = names or [f"worker {i}" for i in range(len(args))]
        self.conns, self.procs = [], []
        try:
            for a in args:
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_serve, args=(child, body, tuple(a)), daemon=True)
                p.start()
                child.close()  # the worker holds its end: its death is an EOF here
                self.conns.append(parent)
                self.procs.append(p)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.conns)

    def send(self, i: int, message: Any) -> None:
        self.conns[i].send(message)

    def send_all(self, message: Any) -> None:
        for i in range(len(self)):
            self.send(i, message)

    def recv(self, i: int) -> Any:
        """Worker i's next message. A GradlabError in the worker raises one here with its
        message; any other failure, or the worker's death, a RuntimeError naming it."""
        try:
            got = self.conns[i].recv()
        except EOFError:
            self.procs[i].join(timeout=5)
            raise RuntimeError(f"{self.names[i]} exited (code {self.procs[i].exitcode}) without answering") from None
        if isinstance(got, _Failure):
            if got.message is not None:  # shown by the CLI as a message, without a traceback
                raise GradlabError(f"{self.names[i]}: {got.message}")
            raise RuntimeError(f"{self.names[i]} failed:\n{got.text}")
        return got

    def recv_all(self) -> list:
        return [self.recv(i) for i in range(len(self))]

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(None)
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
        for c in self.conns:
            c.close()
