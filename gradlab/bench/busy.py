"""`gradlab bench busy`: training steps on a machine another process keeps busy.

OpenMP threads meet at every parallel region of a step, so one that shares its core with
another process holds the others up each time. Three variants, timed in the same rounds:
all threads on an idle machine; all threads beside ``hogs`` busy processes; and the thread
count gradlab.threads chooses then (the cores left free). The commands' default is the
last; the ratio of the last two is what choosing it gains.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import torch

from gradlab.bench.concurrency import single_step
from gradlab.bench.timing import describe_environment, environment_line, summarize, timed_call
from gradlab.threads import free_threads

__all__ = ["format_result", "run_busy"]

HOG = "while True: pass"
VARIANTS = ("idle, all threads", "busy, all threads", "busy, threads chosen")


def _step_fn(model_name: str, batch_size: int):
    from gradlab.models import build

    torch.manual_seed(0)
    model = build(model_name, num_classes=10, in_channels=1)
    return single_step(model, torch.randn(batch_size, 1, 8, 8), torch.randint(0, 10, (batch_size,)))


def run_busy(model: str = "resnet20", batch_size: int = 64, steps: int = 5, repeats: int = 4, hogs: int = 1,
             progress=None) -> dict:
    """Median step times of the three VARIANTS over ``repeats`` rounds of ``steps`` steps."""
    cpu = torch.device("cpu")
    all_threads = torch.get_num_threads()
    step = _step_fn(model, batch_size)
    times = {v: [] for v in VARIANTS}
    chosen = []

    def timed(variant: str, threads: int) -> None:
        torch.set_num_threads(threads)
        step()  # warm-up after the switch
        times[variant].extend(timed_call(step, cpu) for _ in range(steps))

    try:
        for r in range(repeats):
            timed(VARIANTS[0], all_threads)
            procs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
            try:
                time.sleep(0.5)
                threads, _ = free_threads(all_threads)  # what the commands choose when not told
                chosen.append(threads)
                order = [(VARIANTS[1], all_threads), (VARIANTS[2], threads)]
                for variant, n in order if r % 2 == 0 else order[::-1]:
                    timed(variant, n)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            if progress is not None:
                progress("busy", r + 1, repeats)
    finally:
        torch.set_num_threads(all_threads)
    return {
        "settings": {"model": model, "batch_size": batch_size, "steps": steps, "repeats": repeats, "hogs": hogs,
                     "all_threads": all_threads, "threads_chosen": chosen, "cpu_count": os.cpu_count()},
        "environment": describe_environment(cpu),
        "results": {v: summarize(t) for v, t in times.items()},
    }


def format_result(result: dict) -> str:
    s, r = result["settings"], result["results"]
    idle = r[VARIANTS[0]]["median_s"]
    chosen = statistics.median(s["threads_chosen"]) if s["threads_chosen"] else s["all_threads"]
    lines = [environment_line(result["environment"]),
             f"model: {s['model']}, batch {s['batch_size']} (1x8x8), {s['steps']} steps x {s['repeats']} rounds per "
             f"variant; {s['hogs']} busy process(es) on {s['cpu_count']} cores; threads chosen: {chosen:g} of "
             f"{s['all_threads']}", "",
             f"{'variant':<24}{'median step':>13}{'x idle':>9}"]
    for v in VARIANTS:
        m = r[v]["median_s"]
        lines.append(f"{v:<24}{m * 1000:>10.1f} ms{m / idle:>9.2f}")
    gain = r[VARIANTS[1]]["median_s"] / r[VARIANTS[2]]["median_s"]
    lines.append(f"\nbusy: all threads take {gain:.2f}x the time of the threads chosen")
    return "\n".join(lines)
