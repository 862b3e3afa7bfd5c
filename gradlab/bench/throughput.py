"""Training images/s: gradlab's loop against the conventional PyTorch CIFAR loop.

Both train the same architecture at the same batch size on the same CIFAR-format data
(random images written as real CIFAR-10 batch files in a temporary folder):

* ``gradlab``:   the trainer's own step (gradlab.train.Trainer.train_step): the whole
  dataset on the device as uint8, batched crop/flip/normalize, fused/foreach SGD, bf16
  autocast and channels_last on CUDA, no host sync per step. Recording off (its cost is
  what `gradlab bench overhead` measures).
* ``reference``: torchvision's CIFAR10 dataset class with RandomCrop(32, 4),
  RandomHorizontalFlip, ToTensor, Normalize, a DataLoader with worker processes, and a
  plain eager fp32 model — the way the common PyTorch port trains.

The two loops run interleaved in one process; each step is timed on its own (with a
device sync) and the medians are compared.
"""

from __future__ import annotations

import pickle
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gradlab.bench.timing import describe_environment, environment_line, interleaved, summarize, timed_call
from gradlab.config import DataSpec, RunSpec
from gradlab.environment import resolve_device

DEFAULT_MODELS = ("resnet20", "resnet56", "resnet110")
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def write_cifar_files(root: Path, images: int, seed: int = 0) -> None:
    """Random images in the real CIFAR-10 python format (five train batches, one test batch)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    per_batch = max(1, images // 5)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = per_batch if name != "test_batch" else max(1, per_batch // 5)
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def bench_spec(model_name: str, data: DataSpec, batch_size: int, device: str, compile: bool = False,
               compile_mode: str | None = None) -> RunSpec:
    """The paper recipe's RunSpec of a benchmark: `data` as given, recording off."""
    from gradlab.config import load_preset, make_run_spec

    spec = make_run_spec(model_name, load_preset("paper"), device=device, compile=compile, compile_mode=compile_mode,
                         recipe={"batch_size": batch_size, "record": False})
    return replace(spec, data=data)


def setup_trainer(spec: RunSpec, runs_dir: Path, dataset=None):
    """The real trainer of `spec`, set up for stepping by hand (nothing written to `runs_dir`);
    `dataset`: an already loaded gradlab.data.Dataset (default: load spec.data)."""
    from gradlab import data as datasets
    from gradlab.train import Trainer

    dataset = dataset if dataset is not None else datasets.load(spec.data, verify=False)
    trainer = Trainer(spec, runs_dir, progress=False, dataset=dataset)
    trainer.start_recorder()  # builds the parts; records (writing nothing) if the recipe does
    return trainer


def trainer_step(trainer):
    """A step function running the trainer's own step at steps 0, 1, 2, ..."""
    state = {"step": 0}

    def step():
        trainer.train_step(state["step"])
        state["step"] += 1

    return step


def gradlab_step(model_name: str, data: DataSpec, batch_size: int, device: str, runs_dir: Path,
                 compile: bool = False, compile_mode: str | None = None):
    """A step function running the real trainer's step (`compile`/`compile_mode`: with torch.compile)."""
    spec = bench_spec(model_name, data, batch_size, device, compile=compile, compile_mode=compile_mode)
    return trainer_step(setup_trainer(spec, runs_dir))


def reference_step(model_name: str, data_root: Path, batch_size: int, device: torch.device, workers: int):
    """A step function of the conventional loop (DataLoader + PIL transforms, eager fp32)."""
    from torchvision import transforms

    from gradlab import models
    from gradlab.data.datasets import _without_checksums
    from torchvision.datasets import CIFAR10

    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    dataset = _without_checksums(CIFAR10)(str(data_root), train=True, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=workers > 0)
    model = models.build(model_name).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    batches = iter(loader)

    def step():
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step, loader


def run_throughput(models=DEFAULT_MODELS, batch_size: int = 128, steps: int = 10, repeats: int = 3,
                   device: str = "auto", workers: int | None = None, images: int = 5120, progress=None,
                   compile: bool = False, compile_mode: str | None = None) -> dict:
    """Median images/s of both loops for each model, and their ratio (gradlab / reference).

    compile=True adds the variant "gradlab-compiled" (the trainer's step with torch.compile);
    its compilation time is reported on its own ("compile_s": the first step's time less
    the median step), not mixed into the steady-state images/s. `compile_mode` (one of
    gradlab.config.COMPILE_MODES; implies compile) is torch.compile's mode, e.g.
    "reduce-overhead" (CUDA graphs); compile alone means "default".
    """
    import os

    compile = compile or compile_mode is not None
    mode = (compile_mode or "default") if compile else None  # a bad one: ConfigError from make_run_spec
    dev = resolve_device(device)
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    results = {}
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-") as tmp:
        root = Path(tmp)
        write_cifar_files(root / "data", images)
        data = DataSpec(name="cifar10", data_dir=str(root / "data"), download=False)
        for name in models:
            ref, loader = reference_step(name, root / "data", batch_size, dev, workers)
            variants = {"gradlab": gradlab_step(name, data, batch_size, str(dev), root / "runs")}
            compile_s = None
            if compile:
                compiled = gradlab_step(name, data, batch_size, str(dev), root / "runs-compiled", compile_mode=mode)
                compile_s = timed_call(compiled, dev)  # the first call compiles
                variants["gradlab-compiled"] = compiled
            variants["reference"] = ref
            timings = interleaved(variants, steps, repeats, dev, warmup=2,
                                  progress=(lambda v, d, t, n=name: progress(f"{n} {v}", d, t)) if progress else None)
            del loader
            entry = {}
            for variant in variants:
                stats = summarize(timings.steps[variant])
                stats["images_per_s"] = batch_size / stats["median_s"]
                entry[variant] = stats
            entry["ratio"] = entry["gradlab"]["images_per_s"] / entry["reference"]["images_per_s"]
            if compile:
                c = entry["gradlab-compiled"]
                c["compile_s"] = max(compile_s - c["median_s"], 0.0)
                entry["ratio_compiled"] = c["images_per_s"] / entry["reference"]["images_per_s"]
            results[name] = entry
    return {
        "benchmark": "throughput",
        "settings": {"models": list(models), "batch_size": batch_size, "steps": steps, "repeats": repeats,
                     "reference_workers": workers, "images": images, "recording": False, "compile": compile,
                     "compile_mode": mode},
        "environment": describe_environment(dev),
        "results": results,
    }


def format_result(result: dict) -> str:
    """The printout of :func:`run_throughput`'s result: images/s of each loop, and the ratio."""
    s = result["settings"]
    lines = [environment_line(result["environment"]),
             f"batch {s['batch_size']}, {s['steps']} steps x {s['repeats']} rounds per loop, interleaved; "
             f"reference: {s['reference_workers']} DataLoader workers, fp32 eager; gradlab: recording off", "",
             f"{'model':<12}{'gradlab img/s':>15}{'reference img/s':>17}{'ratio':>8}"]
    for name, r in result["results"].items():
        lines.append(f"{name:<12}{r['gradlab']['images_per_s']:>15.1f}{r['reference']['images_per_s']:>17.1f}"
                     f"{r['ratio']:>7.2f}x")
    if s["compile"]:
        lines += ["", f"gradlab compiled: torch.compile mode {s['compile_mode']}",
                  f"{'model':<12}{'compiled img/s':>15}{'x reference':>13}{'compile s':>11}"]
        for name, r in result["results"].items():
            c = r["gradlab-compiled"]
            lines.append(f"{name:<12}{c['images_per_s']:>15.1f}{r['ratio_compiled']:>12.2f}x{c['compile_s']:>11.1f}")
    return "\n".join(lines)
