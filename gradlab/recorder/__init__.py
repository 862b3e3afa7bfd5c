"""The recorder behind ``gradlab.watch``: per-layer gradient and activation statistics while
a model trains, in gradlab's trainer or in anyone's loop.

    rec = gradlab.watch(model, every=50)    # or gradlab.recorder.Recorder(model).start()

What is recorded and which setups are supported: gradlab.recorder.recorder; how it stays
cheap, and what it costs: docs/recorder.md.
"""

from gradlab.recorder.recorder import Recorder
from gradlab.recorder.schedule import Schedule, default_schedule
from gradlab.recorder.watching import watch

__all__ = ["Recorder", "Schedule", "default_schedule", "watch"]
