"""Several small runs on one device: worker processes against a torch.func stack.

The networks of the degradation experiment are small, so one run leaves most of a
modern device idle. Two ways to fill it with N same-architecture runs:

* ``processes``: N worker processes, each training its own model (what ``gradlab
  compare --jobs N`` does). On a CPU the threads are shared out among them.
* ``stacked``:   one process trains all N models at once: their parameters and buffers
  stacked with ``torch.func.stack_module_state`` and the forward ``vmap``-ed over them
  (``functional_call``), so that every kernel works on N models' data in one launch.
* ``single``:    one model alone in one process with every thread: the baseline.

Each variant runs the same bare training step (forward, cross-entropy, backward,
momentum SGD with foreach; each model its own synthetic batch on the device; no
recording). Rounds are interleaved (single, processes, stacked, single, ...); the worker
processes stay alive across rounds and idle while the other variants run. The figure of
merit is the total images/s of all N runs: batch x N / median step time (processes: the
sum over workers of batch / their median step time).
"""

from __future__ import annotations

import copy
import os

import torch
import torch.nn.functional as F

from gradlab.bench.timing import describe_environment, environment_line, input_size, interleaved, summarize, timed_call
from gradlab.bench.workers import WorkerPool
from gradlab.environment import resolve_device

__all__ = ["VARIANTS", "format_result", "run_concurrency", "single_step", "stacked_step"]

VARIANTS = ("single", "processes", "stacked")


def _batch(model_name: str, batch_size: int, device: torch.device, seed: int, n: int | None = None):
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, *input_size(model_name)) if n is None else (n, batch_size, *input_size(model_name))
    x = torch.randn(shape, generator=g).to(device)
    y = torch.randint(0, 10, shape[: 2 if n is not None else 1], generator=g).to(device)
    return x, y


def _optimizer(params, lr: float = 0.05):
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4, foreach=True)


def single_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """A step function training one model on a fixed batch."""
    opt = _optimizer(model.parameters())

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def stacked_step(models: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor):
    """A step function training all `models` at once (x: [N, B, ...], y: [N, B]).

    The loss is the sum of the models' mean losses, so each model's gradient is exactly
    what its own step would compute. Returns (step, params, buffers): the stacked tensors,
    model i's values at index i.
    """
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state(models)  # new leaf tensors, requires_grad set
    template = copy.deepcopy(models[0]).to("meta")
    n = len(models)

    def forward(p, b, xb):
        return functional_call(template, (p, b), (xb,))

    opt = _optimizer(list(params.values()))
    batched = vmap(forward)

    def step():
        out = batched(params, buffers, x)
        per_example = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none")
        loss = per_example.view(n, -1).mean(dim=1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, params, buffers


def _worker(conn, model_name: str, batch_size: int, device: str, threads: int, seed: int) -> None:
    """A worker process: build its model, then time `k` steps whenever asked (None: stop)."""
    from gradlab import models

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(seed)
    model = models.build(model_name).to(dev)
    x, y = _batch(model_name, batch_size, dev, seed)
    step = single_step(model, x, y)
    conn.send("ready")
    while (k := conn.recv()) is not None:
        conn.send([timed_call(step, dev) for _ in range(k)])


class _Workers:
    """N live worker processes; calling the object runs `steps` timed steps in all of them at once."""

    def __init__(self, n: int, model_name: str, batch_size: int, device: torch.device, threads: int):
        self.pool = WorkerPool(_worker, [(model_name, batch_size, str(device), threads, i) for i in range(n)])
        try:
            self.pool.recv_all()  # "ready"
        except BaseException:
            self.pool.close()
            raise
        self.times: list[list[float]] = [[] for _ in range(n)]

    def run(self, steps: int, record: bool = True) -> None:
        self.pool.send_all(steps)
        for i, got in enumerate(self.pool.recv_all()):
            if record:
                self.times[i].extend(got)

    def close(self) -> None:
        self.pool.close()


def run_concurrency(model: str = "resnet20", runs: int = 2, batch_size: int = 128, steps: int = 5,
                    repeats: int = 3, warmup: int = 2, device: str = "auto", progress=None) -> dict:
    """Total images/s of `runs` same-architecture runs: alone, as processes, as a torch.func stack."""
    from gradlab import models as zoo

    dev = resolve_device(device)
    threads_all = torch.get_num_threads()
    per_worker = max(1, threads_all // runs) if dev.type == "cpu" else 1
    torch.manual_seed(0)
    nets = [zoo.build(model).to(dev) for _ in range(runs)]
    x1, y1 = _batch(model, batch_size, dev, seed=0)
    xs, ys = _batch(model, batch_size, dev, seed=0, n=runs)
    single = single_step(copy.deepcopy(nets[0]), x1, y1)
    stacked, _, _ = stacked_step(nets, xs, ys)
    workers = _Workers(runs, model, batch_size, dev, per_worker)
    try:
        for _ in range(warmup):  # compiled kernels, allocator: untimed, in every variant
            single()
            stacked()
        workers.run(warmup, record=False)

        def processes_round():
            workers.run(1)

        timings = interleaved({"single": single, "processes": processes_round, "stacked": stacked},
                              steps, repeats, dev, warmup=0, progress=progress)
    finally:
        workers.close()
    results = {}
    s = summarize(timings.steps["single"])
    results["single"] = {**s, "images_per_s": batch_size / s["median_s"], "runs": 1}
    per = [summarize(t) for t in workers.times]
    results["processes"] = {
        "workers": per,
        "images_per_s": sum(batch_size / p["median_s"] for p in per),
        "median_s": summarize(timings.steps["processes"])["median_s"],
        "runs": runs,
        "threads_per_worker": per_worker,
    }
    s = summarize(timings.steps["stacked"])
    results["stacked"] = {**s, "images_per_s": runs * batch_size / s["median_s"], "runs": runs}
    best = max(("processes", "stacked"), key=lambda v: results[v]["images_per_s"])
    return {
        "benchmark": "concurrency",
        "settings": {"model": model, "runs": runs, "batch_size": batch_size, "steps": steps, "repeats": repeats,
                     "warmup": warmup, "threads": threads_all, "cpu_count": os.cpu_count()},
        "environment": describe_environment(dev),
        "results": results,
        "best": best,
        "ratios": {v: results[v]["images_per_s"] / results["single"]["images_per_s"] for v in ("processes", "stacked")},
    }


def format_result(result: dict) -> str:
    """The printout of :func:`run_concurrency`'s result: total images/s of each way, against one run."""
    s, r = result["settings"], result["results"]
    lines = [environment_line(result["environment"]),
             f"model: {s['model']}, batch {s['batch_size']} per run, {s['runs']} runs, {s['steps']} steps x "
             f"{s['repeats']} rounds per variant, interleaved; workers get {r['processes']['threads_per_worker']} "
             f"thread(s) each", "",
             f"{'variant':<12}{'runs':>6}{'total img/s':>13}{'x single':>10}"]
    lines.append(f"{'single':<12}{1:>6}{r['single']['images_per_s']:>13.1f}{1.0:>10.2f}")
    for v in ("processes", "stacked"):
        lines.append(f"{v:<12}{r[v]['runs']:>6}{r[v]['images_per_s']:>13.1f}{result['ratios'][v]:>10.2f}")
    lines.append(f"\nmore total images/s: {result['best']}")
    return "\n".join(lines)
