"""gradlab: study gradient flow and degradation in plain and residual networks.

    rec = gradlab.watch(model, run_dir="runs/mine/run1")   # per-layer statistics while it trains

``watch`` and ``Recorder`` come from gradlab.recorder, imported on first use so that
``import gradlab`` (and the report side, which never touches torch) stays light; type
checkers and IDEs see them through the TYPE_CHECKING import below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradlab.errors import GradlabError

if TYPE_CHECKING:
    from gradlab.recorder import Recorder, watch

__version__ = "0.1.0"

__all__ = ["GradlabError", "Recorder", "__version__", "watch"]

_LAZY = {"watch", "Recorder"}  # from gradlab.recorder


def __getattr__(name):
    if name in _LAZY:
        import gradlab.recorder as recorder

        return getattr(recorder, name)
    raise AttributeError(f"module 'gradlab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY)
