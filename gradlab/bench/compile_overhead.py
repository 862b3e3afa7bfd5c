"""A compiled model's unrecorded steps: watched by gradlab against never watched.

Two copies of one case (gradlab.bench.overhead_cases) are compiled with ``torch.compile``
(default mode); one is watched with the recorder's default schedule, as users watch a
model before its first compiled call. Both train through the recorder's dense start (its
first ``dense_until`` steps are recorded, and run eagerly), then in interleaved rounds;
only the watched copy's unrecorded steps are timed against the other's. A recorder that
left compiled code on a slower path (recompiles whenever hooks come and go, or a
recompile limit that sends frames back to eager) shows here, and the count of Dynamo
recompile-limit messages is printed beside the times.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time

import torch
import torch.nn.functional as F

from gradlab.bench.overhead_cases import build_case, parse_cases
from gradlab.bench.timing import describe_environment, environment_line, spread, synchronize
from gradlab.environment import resolve_device

__all__ = ["format_result", "run_compile_overhead"]

VARIANTS = ("compiled", "compiled+gradlab")


class _LimitMessages(logging.Handler):
    """Counts torch's messages that a frame hit the recompile limit (and runs eagerly)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "recompile_limit" in text or "cache_size_limit" in text:
            self.count += 1


def run_compile_overhead(model: str = "transformer", steps: int = 5, repeats: int = 6, device: str = "auto",
                         seed: int = 0, backend: str = "inductor", progress=None) -> dict:  # fmt: skip
    """Median unrecorded step of the watched compiled copy over the never-watched one's
    (``backend``: torch.compile's)."""
    import gradlab

    dev = resolve_device(device)
    ((name, arch, size),) = parse_cases(model, None)
    case = build_case(name, arch, size, dev, seed)
    nets = {v: copy.deepcopy(case.net) for v in VARIANTS}
    opts = {v: torch.optim.SGD(nets[v].parameters(), lr=0.01, momentum=0.9) for v in VARIANTS}
    forward = {v: torch.compile(nets[v], backend=backend) for v in VARIANTS}
    rec = gradlab.watch(nets["compiled+gradlab"])  # the default schedule, before the first compiled call
    limits = _LimitMessages()
    logger = logging.getLogger("torch._dynamo")
    logger.addHandler(limits)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    compile_s = {}
    try:
        def step(v: str) -> float | None:
            """One step; its seconds, or None for a recorded step of the watched copy."""
            recorded = v == "compiled+gradlab" and rec.recording
            start = time.perf_counter()
            loss = F.cross_entropy(forward[v](case.x), case.y)
            opts[v].zero_grad(set_to_none=True)
            loss.backward()
            if v == "compiled+gradlab":
                rec.step()
            opts[v].step()
            synchronize(dev)
            return None if recorded else time.perf_counter() - start

        for v in VARIANTS:  # the dense start (recorded, eager), then the first compiled steps
            start = time.perf_counter()
            for _ in range(rec.schedule.dense_until + 2):
                step(v)
            compile_s[v] = time.perf_counter() - start
        for r in range(repeats):
            for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
                taken = [t for t in (step(v) for _ in range(steps)) if t is not None]
                times[v].append(statistics.median(taken) if taken else float("nan"))
            if progress:
                progress("compile", r + 1, repeats)
    finally:
        logger.removeHandler(limits)
        rec.stop()
    ratios = [b / a for a, b in zip(times["compiled"], times["compiled+gradlab"]) if b == b]
    return {
        "benchmark": "overhead --compile",
        "settings": {"case": case.name, "model": case.model, "input": case.input_text, "steps": steps,
                     "repeats": repeats, "device": str(dev), "compile": f"torch.compile, default mode, backend {backend}",
                     "gradlab": "gradlab.watch(model) before the first compiled call: the default schedule"},
        "environment": describe_environment(dev),
        "variants": {v: {"median_s": statistics.median(ts), "rounds": ts} for v, ts in times.items()},
        "ratio": statistics.median(times["compiled+gradlab"]) / statistics.median(times["compiled"]),
        "round_ratios": spread(ratios),
        "first_steps_s": compile_s,  # the dense start and the compile, per copy
        "recompile_limit_messages": limits.count,
        "recorded_statistics": sorted(set(rec.frame()["stat"])),  # what the recorded (eager) steps got
    }  # fmt: skip


def format_result(result: dict) -> str:
    s, v, rr = result["settings"], result["variants"], result["round_ratios"]
    ci = rr["ci95"]
    return "\n".join([
        environment_line(result["environment"]),
        f"model: {s['model']}, {s['input']}; {s['compile']}; {s['gradlab']}; unrecorded steps timed, "
        f"{s['steps']} a round x {s['repeats']} rounds, interleaved",
        f"{'variant':<20}{'median ms':>10}",
        *(f"{name:<20}{x['median_s'] * 1e3:>10.2f}" for name, x in v.items()),
        f"watched x never watched: {result['ratio']:.3f} (round by round {rr['median']:.3f}"
        + (f", 95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ")"),
        "the dense start with compiling: " + ", ".join(f"{k} {t:.1f} s" for k, t in result["first_steps_s"].items()),
        f"recompile-limit messages: {result['recompile_limit_messages']}; the recorded steps have "
        f"{', '.join(result['recorded_statistics'])}",
    ])  # fmt: skip
