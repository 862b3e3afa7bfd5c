"""How long the paper's comparison takes here: all its runs training at once on one device.

`gradlab compare --jobs N` trains the runs as worker processes sharing one device. A short
real compare cannot say how long the full one takes: the small nets finish before the big
ones have compiled. So this benchmark puts every run of the comparison (plain and ResNet
at each depth) in its own worker process ("spawn", as compare's local pool does) and:

1. each worker sets up the real trainer (gradlab.train.Trainer, the paper recipe, recording
   off) on synthetic CIFAR-shaped data on the device, times its first step
   (``first_step_s``) and its first evaluation batch (``first_eval_s``): torch.compile's
   compilations when compiled, all workers at the same time, as in a real compare; then
   it runs ``warmup`` more steps;
2. when all are ready, the parent gives every worker the same wall-clock window; each runs
   steps from its start to its end, then waits for the device: ``steps_per_s_shared`` is
   completed steps / elapsed seconds while all runs share the device. Each worker then
   sets up a second trainer that records every step and runs its first step (untimed);
3. then, one worker at a time (the device otherwise idle), each times ``eval_s``, an
   evaluation of CIFAR's 10,000 test images (the time of one evaluation batch of 1,000,
   times 10), and ``recorded_step_s``, the median of 3 recorded steps (the recorder's
   hooks; eager even when compiled, as in a real run).

The estimate for a run of ``total_steps`` steps, in minutes, is::

    (first_step_s + first_eval_s + (total_steps - R) / steps_per_s_shared
     + R * recorded_step_s + E * eval_s) / 60

with R = default_schedule(total_steps).count(total_steps) recorded steps (305 for 64k) and
E evaluations (one every eval_every = 400 steps: 160 for 64k). The comparison takes as
long as its slowest run: ``paper_compare_minutes`` is the maximum over runs. Its main term,
the shared speed, errs long: once the small runs finish, the big ones get more of the
device. Its recorded steps and evaluations, timed alone, err short (a few per cent of the
total). ``balanced_minutes`` is the other side: every run's training steps at the measured
total rate of all runs together, as if the device kept that rate to the end (it does not
once only the big runs are left). Not counted: checkpoints (16 small files per run) and
the report.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from gradlab.bench.throughput import setup_trainer, trainer_step
from gradlab.bench.timing import describe_environment, environment_line, synchronize, timed_call
from gradlab.bench.workers import WorkerPool
from gradlab.families import PAPER
from gradlab.config import RunSpec
from gradlab.environment import resolve_device
from gradlab.errors import ConfigError
from gradlab.data.loader import EVAL_BATCH  # the trainer evaluates in batches of this many images
from gradlab.train.evaluation import error_rate

__all__ = ["CIFAR_TEST_IMAGES", "estimate_minutes", "format_result", "run_paper"]

CIFAR_TEST_IMAGES = 10_000
RECORDED_STEPS_TIMED = 3


def estimate_minutes(run: dict, total_steps: int, recorded_steps: int, evaluations: int) -> float:
    """Minutes one run of `total_steps` takes, from its measured figures (see the module doc)."""
    seconds = (run["first_step_s"] + run["first_eval_s"] + (total_steps - recorded_steps) / run["steps_per_s_shared"]
               + recorded_steps * run["recorded_step_s"] + evaluations * run["eval_s"])
    return seconds / 60


def _wait_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.05))


def _worker(conn, spec: RunSpec, threads: int, warmup: int) -> None:
    """One run: compile and warm up, train in the shared window, then time recorded steps and
    an evaluation when the parent says it is this run's turn alone."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-paper-") as tmp:
        trainer = setup_trainer(spec, Path(tmp))
        dev = trainer.device
        step = trainer_step(trainer)
        first_step_s = timed_call(step, dev)
        test_x, test_y = (t[:EVAL_BATCH] for t in trainer.parts.eval_sets["test"])
        first_eval_s = timed_call(lambda: error_rate(trainer.parts, trainer.world, dev, test_x, test_y), dev)  # compiles the eval graph
        for _ in range(warmup):
            step()
        synchronize(dev)
        conn.send((first_step_s, first_eval_s))

        window = conn.recv()
        if window is None:  # the parent gave up (another worker failed)
            return
        start, end = window
        _wait_until(start)
        t0 = time.time()
        steps = 0
        while time.time() < end:
            step()
            steps += 1
        synchronize(dev)  # the steps queued on the device are done: `steps` completed in `elapsed`
        elapsed = time.time() - t0
        # set up (all runs at once) a trainer that records every step, and run its first step
        recording = replace(spec, recipe=replace(spec.recipe, record=True, record_every=1))
        recorder_trainer = setup_trainer(recording, Path(tmp), trainer.parts.data)
        recorded = trainer_step(recorder_trainer)
        recorded()  # untimed: the first eager step (allocator, kernels)
        synchronize(dev)
        conn.send((steps, elapsed))

        if conn.recv() is None:  # else: this run's turn alone on the device
            return
        eval_s = timed_call(lambda: error_rate(trainer.parts, trainer.world, dev, test_x, test_y), dev) * CIFAR_TEST_IMAGES / len(test_y)
        times = [timed_call(recorded, dev) for _ in range(RECORDED_STEPS_TIMED)]
        recorder_trainer.recorder.stop()
        conn.send((statistics.median(times), eval_s))
        conn.recv()  # None: done


def run_paper(depths=(20, 56, 110), families=PAPER, batch_size: int = 128, seconds: float = 20.0,
              warmup: int = 3, device: str = "auto", compile_mode: str | None = None, total_steps: int = 64000,
              progress: Callable[[str, int, int], None] | None = None, images: int = 50_000) -> dict:
    """Minutes the paper's comparison (every family x depth, `total_steps` each) takes on this
    device with all runs at once, from `seconds` of steady-state training shared by all of them.

    `images`: synthetic training images per run (default: CIFAR-10's 50,000, so that epochs
    turn over as in the real run; their test set: a quarter).
    """
    from gradlab.compare import plan
    from gradlab.config import load_preset
    from gradlab.recorder import default_schedule

    if seconds <= 0:
        raise ConfigError(f"seconds must be positive, got {seconds}")
    dev = resolve_device(device)
    # steps: evaluations and milestones scale with the run length, as `gradlab compare --steps` does
    specs = plan(load_preset("paper"), depths, families, (0,), steps=total_steps, device=str(dev), compile_mode=compile_mode,
                 data={"name": "synthetic", "synthetic_size": images, "val_split": 0},
                 recipe={"batch_size": batch_size, "record": False})  # a bad depth or mode: ConfigError/ModelError
    names = [s.model.name for s in specs]
    threads_all = torch.get_num_threads()
    per_worker = max(1, threads_all // len(specs)) if dev.type == "cpu" else 1
    stages, done = 2 * len(specs) + 1, 0

    def tick(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(what, done, stages)

    pool = WorkerPool(_worker, [(s, per_worker, warmup) for s in specs], names=names)
    try:
        first = []  # (first_step_s, first_eval_s)
        for i, name in enumerate(names):
            first.append(pool.recv(i))
            tick(f"{name} ready")
        start = time.time() + 0.5
        pool.send_all((start, start + seconds))
        shared = pool.recv_all()
        tick("shared window")
        alone = []
        for i, name in enumerate(names):
            pool.send(i, "alone")
            alone.append(pool.recv(i))
            tick(f"{name} alone")
    finally:
        pool.close()

    recorded_steps = default_schedule(total_steps).count(total_steps)
    eval_every = specs[0].recipe.eval_every
    evaluations = math.ceil(total_steps / eval_every)
    runs = {}
    for spec, (first_s, first_eval_s), (steps, elapsed), (recorded_s, eval_s) in zip(specs, first, shared, alone):
        sps = steps / elapsed
        run = {"steps_shared": steps, "elapsed_shared_s": elapsed, "steps_per_s_shared": sps,
               "images_per_s_shared": sps * batch_size, "first_step_s": first_s, "first_eval_s": first_eval_s,
               "compile_s": first_s + first_eval_s if spec.compile else None, "recorded_step_s": recorded_s,
               "eval_s": eval_s}
        run["minutes_for_total"] = estimate_minutes(run, total_steps, recorded_steps, evaluations)
        runs[spec.model.name] = run
    slowest = max(runs, key=lambda n: runs[n]["minutes_for_total"])
    total_ips = sum(r["images_per_s_shared"] for r in runs.values())
    return {
        "benchmark": "paper",
        "settings": {"depths": list(depths), "families": list(families), "runs": names, "batch_size": batch_size,
                     "seconds": seconds, "warmup": warmup, "compile": specs[0].compile,
                     "compile_mode": specs[0].compile_mode if specs[0].compile else None,
                     "total_steps": total_steps, "recorded_steps": recorded_steps, "eval_every": eval_every,
                     "evaluations": evaluations, "eval_images": CIFAR_TEST_IMAGES, "images": images,
                     "threads_per_worker": per_worker, "cpu_count": os.cpu_count()},
        "environment": describe_environment(dev),
        "results": runs,
        "total_images_per_s_shared": total_ips,
        "slowest": slowest,
        "paper_compare_minutes": runs[slowest]["minutes_for_total"],
        "balanced_minutes": len(runs) * total_steps * batch_size / total_ips / 60,
    }


def format_result(result: dict) -> str:
    """The printout of :func:`run_paper`'s result: each run's speed and minutes, and the whole compare's."""
    s, r = result["settings"], result["results"]
    compiled = f"torch.compile mode {s['compile_mode']}" if s["compile"] else "eager"
    threads = f", {s['threads_per_worker']} thread(s) each" if result["environment"]["device"] == "cpu" else ""
    lines = [environment_line(result["environment"]),
             f"{len(r)} run{'s' if len(r) != 1 else ''} at once, one process each{threads} ({compiled}), batch {s['batch_size']}, "
             f"{s['seconds']:g} s shared window after {s['warmup']} warm-up steps",
             f"per run: {s['total_steps']:,} steps, {s['recorded_steps']} of them recorded, "
             f"{s['evaluations']} evaluations of {s['eval_images']:,} images (recorded steps and evaluations timed "
             f"alone); startup: first step and first evaluation (compiling, when compiled)",
             "",
             f"{'run':<12}{'steps/s':>9}{'img/s':>9}{'startup s':>11}{'recorded s':>12}{'eval s':>9}{'minutes':>10}"]
    for name, v in r.items():
        lines.append(f"{name:<12}{v['steps_per_s_shared']:>9.2f}{v['images_per_s_shared']:>9.0f}"
                     f"{v['first_step_s'] + v['first_eval_s']:>11.2f}{v['recorded_step_s']:>12.3f}{v['eval_s']:>9.2f}"
                     f"{v['minutes_for_total']:>10.1f}")
    minutes = result["paper_compare_minutes"]
    lines += ["", f"all runs together: {result['total_images_per_s_shared']:.0f} img/s",
              f"paper compare: about {minutes:.0f} min ({minutes / 60:.1f} h), as long as its slowest run "
              f"({result['slowest']}) at its shared speed; long on the whole: the big runs speed up once the "
              f"small ones finish",
              f"all runs' steps at the measured total rate: {result['balanced_minutes']:.0f} min (short: the "
              f"device does not keep that rate once only the big runs are left)"]
    return "\n".join(lines)
