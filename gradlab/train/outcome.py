"""How a run ended, in status.json's words: the state and the message for each way out.

A stop between steps (a signal, a job scheduler) is ``interrupted`` and resumes from its
checkpoint; an error is ``failed`` with its type and text; a loss that went non-finite is
``diverged``, with where the recorder first saw a non-finite value; so is a run whose
recorded statistics go non-finite while its loss stays finite (overflowing sums of squares
at a loss of 1e19: a dead net, not a finished one).
"""

from __future__ import annotations

from gradlab import runs
from gradlab.errors import RunInterrupted
from gradlab.interrupt import StopNow

__all__ = ["diverged_message", "failure"]


def failure(e: BaseException, name: str, step: int, last_checkpoint: int | None) -> tuple[str, str]:
    """(state, message) of a run that ended with ``e`` at ``step``."""
    # SystemExit: a scheduler's signal handler ended the process (submitit exits this way
    # after requeueing a preempted or timed-out job, which then resumes the run)
    interrupted = isinstance(e, (KeyboardInterrupt, RunInterrupted, SystemExit))
    state = runs.INTERRUPTED if interrupted else runs.FAILED
    if isinstance(e, StopNow):
        message = (f"{name} stopped at once by a second {e} during step {step + 1}, without a checkpoint; rerun "
                   f"the same command to resume from the last checkpoint (step {last_checkpoint or 0})")
    elif isinstance(e, RunInterrupted):
        message = str(e)
    elif isinstance(e, SystemExit):
        message = (f"the process was told to exit (code {e.code}) at step {step}, e.g. by a job scheduler; rerun "
                   f"or requeue it to resume from the last checkpoint")
    else:
        message = f"{type(e).__name__}: {e}"
    return state, message


def diverged_message(bad_step: int, nonfinite: dict | None) -> str:
    """What status.json says of a diverged run (``nonfinite``: the recorder's first sighting)."""
    if bad_step < 0 and nonfinite:  # the loss stayed finite (e.g. 1e19), the statistics did not
        return f"{runs.diverged_note(nonfinite)} while the loss stayed finite: the run diverged"
    message = f"loss became non-finite at step {bad_step}"
    if nonfinite:
        message += f"; first non-finite {nonfinite['what']} in {nonfinite['layer']} at step {nonfinite['step']}"
    return message
