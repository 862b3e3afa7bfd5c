"""How long a plan of runs will take, said before the first one starts.

The rate (seconds per unit of gradlab.compare.cost) comes from the finished runs the plan
reuses, which recorded their training time; without any, from a few timed training steps
of the plan's cheapest model on random inputs of the data's shape. Those steps leave out
recording and evaluation, so that estimate is a lower bound and says so.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from gradlab import runs, run_tables

PROBE_STEPS = 3  # timed steps after one untimed (first-call overhead)


def rate_from_runs(finished: list[tuple], cost) -> float | None:
    """Median seconds per cost unit of finished (spec, run directory) pairs (their last
    time_s), or None."""
    rates = []
    for spec, d in finished:
        try:
            metrics = run_tables.read(Path(d) / runs.METRICS)
        except Exception:  # an unreadable run gives no rate; the trainer says what is wrong with it
            continue
        if metrics is None or "time_s" not in metrics or metrics["time_s"].dropna().empty:
            continue
        rates.append(float(metrics["time_s"].dropna().iloc[-1]) / cost(spec))
    return statistics.median(rates) if rates else None


def probe_rate(spec, cost) -> float:
    """Seconds per cost unit of ``spec``'s model, from a few SGD steps on random inputs."""
    import torch

    from gradlab import models
    from gradlab.data.datasets import planned
    from gradlab.environment import resolve_device

    data = planned(spec.data)
    device = torch.device(resolve_device(spec.device))
    model = models.build(spec.model.name, num_classes=data.classes or 10, in_channels=data.shape[0],
                         **spec.model.build_options()).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(spec.recipe.batch_size, *data.shape, device=device)
    y = torch.randint(0, data.classes or 10, (spec.recipe.batch_size,), device=device)
    for i in range(PROBE_STEPS + 1):
        if i == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / PROBE_STEPS
    return per_step * spec.recipe.steps / cost(spec)


def estimate(todo: list, reused: list[tuple], cost, jobs: int = 1, probe: bool = True) -> tuple[float | None, str]:
    """(seconds, where the rate comes from) for training ``todo`` ``jobs`` at a time;
    ``reused``: the (spec, run directory) of the plan's finished runs. probe=False (runs that
    train elsewhere, on a cluster): no timed steps here, so (None, why) without finished runs."""
    total = sum(cost(s) for s in todo)
    rate = rate_from_runs(reused, cost)
    if rate is not None:
        basis = f"at the pace of the {len(reused)} finished run(s) here"
    elif not probe:
        return None, "no estimate: they train on the launcher's machines and none has finished here yet"
    else:
        cheapest = min(todo, key=cost)
        rate = probe_rate(cheapest, cost)
        basis = f"from {PROBE_STEPS} timed steps of {cheapest.model.name}, without recording or evaluation: a lower bound"
    return total * rate / max(1, min(jobs, len(todo))), basis
