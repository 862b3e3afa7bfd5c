"""``gradlab.watch(model, ...)``: start a :class:`gradlab.recorder.recorder.Recorder` on a
model, with its schedule, statistics, run directory and live findings in one call (what
gradlab's trainer, the Lightning and Hugging Face callbacks and users' loops call)."""

from __future__ import annotations

import os
from typing import Iterable

import torch.nn as nn

from gradlab.recorder.recorder import Recorder
from gradlab.recorder.schedule import Schedule
from gradlab.run_writer import RunWriter

__all__ = ["watch"]


def watch(
    model: nn.Module,
    *,
    every: int = 50,
    stats: Iterable[str] | None = None,
    dense_until: int = 100,
    dense_every: int = 1,
    histograms: bool = False,
    schedule: Schedule | None = None,
    hist_every: int | None = None,
    buffer_steps: int = 64,
    cpu_threads: int | None = None,
    act_sample: int | None = 16,
    reduce_at: str = "auto",
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
    run_dir: str | os.PathLike | RunWriter | None = None,
    name: str | None = None,
    experiment: str | None = None,
    config: dict | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Iterable = (),
    combine_ranks: bool = False,
    findings=None,
) -> Recorder:
    """Start recording ``model``; returns the started :class:`Recorder` (also a context
    manager that stops it on exit).

    ``every``, ``dense_until``, ``dense_every`` build the :class:`Schedule` of recorded steps
    (or pass ``schedule=``); ``stats`` is a selection of ``gradlab.stat_names.ALL_STATS``
    (None: ``DEFAULT_STATS``, all but the optional ones); ``histograms`` adds per-parameter
    gradient histograms every ``hist_every`` steps (default ``10 * every``), read with
    :meth:`Recorder.histograms`; ``buffer_steps`` is how many recorded steps the device buffer
    holds before an automatic flush. ``act_sample``: activation statistics and branch
    ratios use the first ``act_sample`` examples of a batch (None: always the whole batch),
    except the mean and std at a BatchNorm in training and at the point that feeds it,
    which are the whole batch's; on a CPU these reductions are memory-bound, and a small
    sample estimates the same quantities for a fraction of the cost. ``cpu_threads`` limits
    the intra-op threads of the hooks on a CPU (None: PyTorch's setting; 1 helps on an
    oversubscribed machine only). ``reduce_at``: "hooks" reduces in each hook, "step" defers
    the reductions to ``step()`` (fewer, batched kernels), "auto" (default) picks "step" on
    CUDA (with ``act_sample`` set) and "mixed" elsewhere: small tensors deferred, large ones
    reduced in the hooks while in cache; :attr:`Recorder.reductions` says which is in use. docs/recorder.md has the measurements behind these defaults.

    ``include``/``exclude``: glob patterns on module names choosing the layers watched
    (gradlab.recorder.targets). ``run_dir``: also write a run directory that ``gradlab
    report`` draws (gradlab.run_writer), with ``name`` (its label; default: the
    folder's name), ``experiment`` (what spec.json says the run belongs to, for the
    report's title; default: the name of the folder holding it), ``config`` (a dict of your
    settings), ``resume``/``overwrite`` (for a folder that holds a run already) and
    ``callbacks`` (trackers such as gradlab.tracking.WandbTracker, told what is written); or
    a RunWriter made beforehand (gradlab's trainer does), which its maker closes. Rows written there are not kept in
    memory. ``combine_ranks``: under DistributedDataParallel every rank watches and steps,
    act_grad_norm is the global batch's and rank 0 alone keeps the rows (give it the
    run_dir): gradlab.recorder.ranks.

    ``findings``: run gradlab's rules on the run directory at each flush and say each new
    finding once (a FindingWarning, and to the trackers): True or "warn"; "stop" also ends
    the run at the first error (rec.step() raises FindingStop; the run is marked
    interrupted and resumes); a function of a Finding; or a gradlab.findings.LiveFindings
    with its own thresholds and action (docs/findings.md).
    """
    from gradlab.findings.live import wired

    live, callbacks = wired(findings, run_dir, callbacks)
    rec = Recorder(
        model, every=every, stats=stats, dense_until=dense_until, dense_every=dense_every, histograms=histograms,
        schedule=schedule, hist_every=hist_every, buffer_steps=buffer_steps, cpu_threads=cpu_threads,
        act_sample=act_sample, reduce_at=reduce_at, include=include, exclude=exclude, run_dir=run_dir, name=name,
        experiment=experiment, config=config, resume=resume, overwrite=overwrite, callbacks=callbacks,
        combine_ranks=combine_ranks,
    )
    if live is not None:
        live.forward = rec._rows.writer.callbacks
    return rec.start()
