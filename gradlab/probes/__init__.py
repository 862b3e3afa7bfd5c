"""Deprecated: the recorder moved to gradlab.recorder, the studies to gradlab.analyses.

``gradlab.probes.watch``, ``Recorder``, ``Schedule`` and ``default_schedule`` still work
for now, with a DeprecationWarning; import them from gradlab.recorder (or use gradlab.watch).
"""

from __future__ import annotations

import warnings

_MOVED = ("Recorder", "Schedule", "default_schedule", "watch")


def __getattr__(name):
    if name in _MOVED:
        warnings.warn(
            f"gradlab.probes.{name} moved to gradlab.recorder.{name}; gradlab.probes will be removed "
            f"(use gradlab.watch or `from gradlab.recorder import {name}`)",
            DeprecationWarning,
            stacklevel=2,
        )
        import gradlab.recorder

        return getattr(gradlab.recorder, name)
    raise AttributeError(f"module 'gradlab.probes' has no attribute {name!r}")
