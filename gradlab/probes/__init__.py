"""Hooks and statistics: the recorder of per-layer gradient-flow statistics.

    rec = gradlab.watch(model, every=50)    # or gradlab.probes.Recorder(model).start()

See gradlab.probes.recorder for what is recorded and which setups are supported.
"""

from gradlab.probes.recorder import Recorder, watch
from gradlab.probes.schedule import Schedule, default_schedule

__all__ = ["Recorder", "Schedule", "default_schedule", "watch"]
