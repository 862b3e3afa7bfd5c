"""Where a run executes: device choice and a description written into spec.json."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

from gradlab import __version__
from gradlab.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; an unavailable device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for, but CUDA is not available here; use --device cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device '{name}' is not supported; use auto, cpu, cuda or cuda:N")
    return device


def git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def describe(device: torch.device) -> dict:
    info = {
        "gradlab": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git": git_revision(),
        "device": str(device),
        "host": platform.node(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = _cpu_model() or platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None
