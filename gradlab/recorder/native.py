"""The recorder's fused CPU kernels (gradlab/recorder/fused_norms.c), compiled on first use.

On a CPU a short step pays the recorder per PyTorch call more than per element: the
parameter statistics of a 12-layer transformer are ~150 tensors, each read for three norms
and copied once. The C kernel does all of it in one call, one pass over each tensor. It is
compiled with the system's C compiler (``$CC``, else ``cc``) into
``~/.cache/gradlab/native`` (``$XDG_CACHE_HOME`` is honoured) once per source and machine,
and loaded with ctypes: no build step at install. Where PyTorch's GNU OpenMP runtime is
loaded (Linux wheels) the kernels are built with ``-fopenmp`` and split large work among
PyTorch's own threads; elsewhere they run on the calling thread. Where building fails (no
compiler, Windows, a read-only home) or ``GRADLAB_NATIVE=0`` is set, :func:`library`
returns None and the recorder reduces with PyTorch ops, which give the same values to
float32 rounding; :func:`status` says which and why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

__all__ = ["cache_dir", "library", "reset", "status"]

SOURCE = Path(__file__).with_name("fused_norms.c")
_FLAGS = ["-O3", "-shared", "-fPIC", "-pthread"]
_OPENMP = ["-fopenmp"]  # PyTorch's own OpenMP runtime, already loaded (libgomp.so.1), runs its threads
_P = ctypes.c_void_p
_I64 = ctypes.c_int64

_lock = threading.Lock()
_lib: ctypes.CDLL | bool | None = None  # None: not tried yet; False: unavailable
_why_not = ""


def cache_dir() -> Path:
    """Where compiled kernels are kept (``$XDG_CACHE_HOME/gradlab/native``, else ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gradlab" / "native"


def library() -> ctypes.CDLL | None:
    """The loaded kernels, compiling them on the first call; None where they cannot be had."""
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                _lib = _load() or False
    return _lib or None


def status() -> str:
    """One line: whether the fused kernels are in use, and if not, why."""
    lib = library()
    if lib is None:
        return f"fused CPU kernels: off ({_why_not})"
    return "fused CPU kernels: on" if lib.openmp() else "fused CPU kernels: on (one thread: built without OpenMP)"


def reset() -> None:
    """Forget the loaded library (the next :func:`library` call looks again; for tests)."""
    global _lib, _why_not
    with _lock:
        _lib, _why_not = None, ""


def _off(why: str) -> None:
    global _why_not
    _why_not = why


def _compiler() -> list[str] | None:
    """The compiler's command: ``$CC`` (which may carry a launcher or flags: "ccache gcc"),
    else the one Python was built with, else ``cc``; None when it is not installed."""
    named = os.environ.get("CC", "").split() or (sysconfig.get_config_var("CC") or "").split()[:1] or ["cc"]
    found = shutil.which(named[0])
    if found is None and "CC" not in os.environ:
        found = shutil.which("cc")
        named = ["cc"]
    return None if found is None else [found, *named[1:]]


def _load() -> ctypes.CDLL | None:
    if os.environ.get("GRADLAB_NATIVE", "1").strip().lower() in ("0", "off", "false", "no"):
        return _off("GRADLAB_NATIVE=0")
    if sys.platform == "win32":
        return _off("not built on Windows")
    command = _compiler()
    if command is None:
        return _off("no C compiler found: install one (cc), or set $CC")
    if _openmp_loaded():  # (a compiler without OpenMP: the kernels run on the calling thread alone)
        lib = _build(command, _FLAGS + _OPENMP)
        if lib is not None:
            return lib
    return _build(command, _FLAGS)


def _openmp_loaded() -> bool:
    """Whether GNU OpenMP (libgomp.so.1, PyTorch's on Linux) is already loaded: kernels built
    with it share PyTorch's threads; with any other runtime they would start a second pool."""
    try:
        ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except (OSError, AttributeError):  # (not loaded; or no RTLD_NOLOAD: not Linux)
        return False
    return True


def _build(command: list[str], flags: list[str]) -> ctypes.CDLL | None:
    """The kernels compiled with ``flags``, from the cache or compiled now (None: see _why_not)."""
    source = SOURCE.read_bytes()
    tag = hashlib.sha256(b"\0".join([source, " ".join(command).encode(), " ".join(flags).encode(),
                                     platform.machine().encode(), sys.platform.encode()])).hexdigest()[:16]  # fmt: skip
    target = cache_dir() / f"fused_norms-{tag}.so"
    if target.exists():
        lib = _open(target)
        if lib is not None:
            return lib
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
    except OSError as e:
        return _off(f"cannot write {target.parent}: {e.strerror or e}")
    try:
        done = subprocess.run([*command, *flags, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            first = (done.stderr or done.stdout).strip().splitlines()[:1]
            return _off(f"{Path(command[0]).name} failed: {first[0] if first else 'exit ' + str(done.returncode)}")
        os.replace(tmp, target)  # atomic: a process compiling beside this one gets one whole file
    except (OSError, subprocess.SubprocessError) as e:
        return _off(f"{Path(command[0]).name} could not run: {e}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return _open(target) or _off(f"{target} could not be loaded")


def _open(path: Path) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(path))
        params, tensors, one, openmp = lib.param_norms, lib.tensor_stats, lib.one_stats, lib.openmp
        bn_in, bn_out, bn_grad = lib.bn_input_totals, lib.bn_output_totals, lib.bn_grad_totals
        planned = lib.planned_stats
    except (OSError, AttributeError):  # not a library, or one without the kernels
        return None
    params.argtypes = [_I64, _P, _P, _P, _P, _P, _P, _P, _P, ctypes.c_int, ctypes.c_int]
    params.restype = openmp.restype = ctypes.c_int
    openmp.argtypes = []
    tensors.argtypes = [_I64, _P, _P, _P, _P, _P, ctypes.c_float, ctypes.c_int]
    tensors.restype = one.restype = None
    one.argtypes = [_P, _I64, _P, ctypes.c_float, ctypes.c_int]
    planned.argtypes = [_I64, _P, _P, _P, _P, _P, _P, ctypes.c_float, ctypes.c_int]
    planned.restype = None
    bn_in.argtypes = [_I64, _P, _P, _P, _P, _P, _P]
    bn_out.argtypes = [_I64, _P, _P, _P, _P, _P, _P, _P]
    bn_grad.argtypes = [_I64, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, ctypes.c_int]
    bn_in.restype = bn_out.restype = bn_grad.restype = None
    return lib
