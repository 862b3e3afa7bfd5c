"""The variants `gradlab bench overhead` times beside the bare step: gradlab.watch, and
what may ride on it (a run directory with live findings), and wandb.watch.

Each is a function of no arguments that runs one training step of its own copy of the
case's model (gradlab.bench.overhead_cases); what it holds open (a temporary folder, a
wandb run, a recorder) is closed by the ExitStack it is given.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
import warnings
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from gradlab import runs
from gradlab.bench.overhead_cases import Case
from gradlab.run_writer import RunWriter

if TYPE_CHECKING:
    from gradlab.findings.live import LiveFindings

__all__ = ["findings_variant", "trainer", "wandb_offline", "wandb_variant"]


@contextlib.contextmanager
def wandb_offline(tmp: str):
    """Offline, silent wandb writing under ``tmp``; the environment is restored after."""
    keys = {"WANDB_MODE": "offline", "WANDB_DIR": tmp, "WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def trainer(net: torch.nn.Module, case: Case, after_backward: Callable[[], None] | None = None):
    """A training step of ``net`` on the case's batch (``after_backward``: the recorder's step)."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = case.x, case.y

    def step():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward()
        opt.step()

    return step


def wandb_variant(stack: contextlib.ExitStack, base, case: Case, skipped: dict):
    """The wandb.watch step, offline in a temporary folder that ``stack`` removes (None: it
    cannot run here, said in ``skipped``)."""
    tmp = tempfile.mkdtemp(prefix="gradlab-bench-wandb-")
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    stack.enter_context(wandb_offline(tmp))
    try:
        import wandb

        run = wandb.init(project="gradlab-bench", dir=tmp, mode="offline",
                         settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))  # fmt: skip
        net = copy.deepcopy(base)
        wandb.watch(net, log="gradients", log_freq=1)
    except Exception as e:  # wandb missing, or it cannot start here
        skipped["wandb"] = f"{type(e).__name__}: {e}"
        return None

    def finish():
        with contextlib.suppress(Exception):
            wandb.unwatch(net)
        with contextlib.suppress(Exception):
            run.finish(quiet=True)

    stack.callback(finish)
    counter = iter(range(1 << 62))
    return trainer(net, case, lambda: run.log({"bench_step": next(counter)}))


def findings_variant(stack: contextlib.ExitStack, base, case: Case, every: int, reduce_at: str, stats,
                     flush_every: int) -> tuple[Callable[[], None], LiveFindings]:  # fmt: skip
    """The gradlab step with what a user's run adds: a run directory in a temporary folder,
    and the findings rules (gradlab.findings.live) run on it at each flush, every
    ``flush_every`` recorded steps (a run's buffer flushes every 64, or every 30 s, which
    here is left out: the variants share the clock, so it would come three times early).
    Findings on the synthetic batch are not printed. Returns the step and the LiveFindings
    (its ``checks`` count the rules' runs)."""
    import gradlab
    from gradlab.findings.live import FindingWarning, LiveFindings

    tmp = tempfile.mkdtemp(prefix="gradlab-bench-findings-")
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    stack.enter_context(warnings.catch_warnings())  # (restored when the stack closes)
    warnings.simplefilter("ignore", FindingWarning)
    net, live = copy.deepcopy(base), LiveFindings()
    # written by steps only, as gradlab's trainer writes (the variants share the clock)
    writer = stack.enter_context(RunWriter(os.path.join(tmp, "run"), flush_seconds=None))
    stack.callback(writer.close, runs.DONE)
    rec = gradlab.watch(net, every=every, dense_until=0, reduce_at=reduce_at, stats=stats, buffer_steps=flush_every,
                        run_dir=writer, findings=live)  # fmt: skip
    stack.callback(rec.stop)  # (before the writer closes)
    return trainer(net, case, rec.step), live
