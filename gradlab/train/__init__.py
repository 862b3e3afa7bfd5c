"""Training one run with the recipe of He et al. 2015 (arXiv 1512.03385, §4.2).

    loop.py         the Trainer: a loop over the parts below, recording through gradlab.watch
    parts.py        data, model, optimizer, lr schedule and forward, built from a RunSpec
    lr_schedule.py  the paper's step schedule with its warm-up for the deepest nets
    state.py        what a checkpoint holds, saved and restored side by side
    outcome.py      how a run ended, in status.json's words
    run_fields.py   what a trained run adds to spec.json; is an existing run this one?
"""

from gradlab.train.loop import RunResult, Trainer, deterministic, train

__all__ = ["RunResult", "Trainer", "deterministic", "train"]
