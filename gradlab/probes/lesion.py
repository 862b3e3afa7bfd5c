"""Lesion study (Veit et al. 2016): delete one block of a trained net at a time, test it.

Veit et al. removed single residual blocks from trained ResNets at test time and found
that the error hardly changes (except at downsampling blocks), while removing a layer of a
plain net (VGG) destroys it: residual nets behave like ensembles of shallower paths.

What "deleting block b" means here, in eval mode with the trained BN statistics:

- residual block: its branch F(x) is replaced by zeros (a forward hook on the block's
  ``branch_out``), so the block computes what its own definition leaves without F: for
  the CIFAR and ImageNet nets relu(shortcut(x)), which is x for an identity shortcut (x is
  already the output of a ReLU); for pre-activation nets shortcut(x). Every block can be
  deleted, also the downsampling ones (their shortcut changes the shape).
- plain block (the same modules without the addition): the whole block is replaced by
  the identity, y = x, which is what deleting a residual block with an identity shortcut
  gives too. A plain block that changes the shape (the first of a stage: stride 2, more
  channels) has no identity to stand in for it and is not deleted (its error is NaN).

Both units are blocks (two or three weighted layers), so plain and residual nets of equal
depth lose the same layers. Test error is measured on the run's test set, normalized with
the training set's channel statistics exactly as training did (gradlab.loader).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from gradlab import data as datasets
from gradlab import models
from gradlab import runs as R
from gradlab.checkpoint import load_checkpoint
from gradlab.config import DataSpec
from gradlab.environment import describe, resolve_device
from gradlab.errors import ModelError, RunDirError
from gradlab.loader import DeviceLoader
from gradlab.probes.result import ProbeResult

__all__ = ["KIND", "LESION_COLUMNS", "LoadedRun", "collect_runs", "default_out_dir", "lesion", "load_trained"]

KIND = "lesion"
LESION_COLUMNS = ["run", "model", "family", "depth", "seed", "block_index", "block", "changes_shape",
                  "deleted", "test_err", "intact_err"]  # fmt: skip
RUN_COLUMNS = ["run", "path", "model", "family", "depth", "seed", "blocks", "dataset", "num_classes",
               "test_size", "step", "intact_err", "final_test_err"]  # fmt: skip


def collect_runs(paths) -> tuple[list[R.Run], list[str]]:
    """Finished runs with a checkpoint under `paths`, and a warning per run left out.

    A run directory given by name must be usable (else RunDirError); runs found inside a
    folder that are unfinished or lack checkpoint.pt are left out with a warning.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[R.Run] = []
    warnings: list[str] = []
    for p in map(Path, paths):
        named = R.is_run_dir(p)
        for d in R.find_run_dirs([p]):
            try:
                found.append(_usable(R.read_run(d)))
            except RunDirError as e:
                if named:
                    raise
                warnings.append(f"skipped {d}: {e}")
    found = list({r.path.resolve(): r for r in found}.values())
    if not found:
        where = ", ".join(map(str, paths))
        raise RunDirError(f"no finished run with a checkpoint under {where}"
                          + (f" ({len(warnings)} left out: {warnings[0]})" if warnings else "")
                          + "; train one first, e.g. `gradlab compare --depths 20,56 --preset quick`")
    return found, warnings


def _usable(run: R.Run) -> R.Run:
    state = run.state
    if state != R.DONE:
        why = {"diverged": "its loss diverged, so there is no trained net to lesion"}.get(
            state, "finish it by rerunning its train or compare command")
        raise RunDirError(f"{run.path} is {state} (step {run.status.get('step', 0)}), not done: {why}")
    if not (run.path / R.CHECKPOINT).is_file():
        raise RunDirError(f"{run.path} has no {R.CHECKPOINT} (the weights); it cannot be lesioned")
    model = run.spec.get("run", {}).get("model", {})
    if "name" not in model or "data" not in run.spec.get("run", {}):
        raise RunDirError(f"{run.path / R.SPEC} does not say which model and data the run used")
    if run.family not in ("plain", "resnet"):
        raise ModelError(f"{run.path} trained a {run.family!r} model; lesions need a plain or residual "
                         f"zoo model (resnet/plain, preresnet/preplain, seedresnet/seedplain)")  # fmt: skip
    return run


def default_out_dir(runs: list[R.Run]) -> Path:
    """<experiment folder>/lesion when every run lies in the same experiment folder."""
    parents = {r.path.resolve().parent for r in runs}
    if len(parents) != 1:
        raise RunDirError("the runs lie in different experiment folders; choose where the results go with --out")
    return runs[0].path.parent / "lesion"


@dataclass
class LoadedRun:
    """A trained run rebuilt: its model (eval mode, weights loaded) and test set."""

    run: R.Run
    model: torch.nn.Module
    loader: DeviceLoader
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    step: int = 0

    @torch.no_grad()
    def test_error(self) -> float:
        """Fraction of test images misclassified (fp32, as training evaluated on a CPU)."""
        wrong = torch.zeros((), device=self.loader.device)
        for xb, yb in self.loader.eval_batches(self.test_x, self.test_y):
            wrong += (self.model(xb).argmax(1) != yb).sum()
        return float(wrong) / len(self.test_y)


def load_trained(run: R.Run, device: torch.device, data_cache: dict | None = None) -> LoadedRun:
    """Rebuild a run's model from spec.json, load checkpoint.pt, and get its test set."""
    spec = run.spec["run"]
    data_info = run.spec.get("data", {})
    try:
        data_spec = DataSpec(**{**spec["data"], "synthetic_shape": tuple(spec["data"].get("synthetic_shape", ()))})
    except TypeError as e:
        raise RunDirError(f"{run.path / R.SPEC} has a data spec this gradlab cannot read ({e})") from e
    cache = {} if data_cache is None else data_cache
    if data_spec not in cache:
        cache[data_spec] = datasets.load(data_spec)
    ds = cache[data_spec]
    m = spec["model"]
    model = models.build(m["name"], num_classes=int(data_info.get("num_classes", ds.num_classes)),
                         in_channels=int(data_info.get("shape", ds.shape)[0]), shortcut=m.get("shortcut"),
                         zero_init_residual=bool(m.get("zero_init_residual", False)))  # fmt: skip
    state = load_checkpoint(run.path / R.CHECKPOINT, device)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise RunDirError(f"{run.path / R.CHECKPOINT} does not hold the weights of {m['name']} ({e}); "
                          f"was the run directory edited by hand?") from e  # fmt: skip
    model.to(device).eval()
    loader = DeviceLoader(ds, 1, run.spec.get("seed", 0), device)
    return LoadedRun(run, model, loader, ds.test_x, ds.test_y, ds.num_classes, int(state.get("step", 0)))


def _block_shapes(loaded: LoadedRun) -> dict[str, tuple[tuple, tuple]]:
    """(input shape, output shape) of every block, from one forward pass on two test images."""
    shapes: dict[str, tuple[tuple, tuple]] = {}

    def record(name):
        def hook(module, inputs, output):
            shapes[name] = (tuple(inputs[0].shape), tuple(output.shape))
        return hook

    hooks = [block.register_forward_hook(record(name)) for name, block in loaded.model.residual_blocks()]
    try:
        xb, _ = next(loaded.loader.eval_batches(loaded.test_x[:2], loaded.test_y[:2]))
        with torch.no_grad():
            loaded.model(xb)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _zero_branch(module, inputs, output):
    return torch.zeros_like(output)


def _skip_block(module, inputs, output):
    return inputs[0]


def lesion_run(loaded: LoadedRun, bar=None) -> tuple[list[dict], dict]:
    """Test error with each block deleted in turn (rows in depth order) and the run's row."""
    run, model = loaded.run, loaded.model
    intact = loaded.test_error()
    shapes = _block_shapes(loaded)
    base = {"run": run.name, "model": run.spec["run"]["model"]["name"], "family": run.family, "depth": run.depth,
            "seed": int(run.spec.get("seed", 0))}  # fmt: skip
    rows = []
    for index, (name, block) in enumerate(model.residual_blocks(), start=1):
        in_shape, out_shape = shapes[name]
        changes = in_shape != out_shape
        if block.residual:
            handle = block.branch_out.register_forward_hook(_zero_branch)
        elif not changes:
            handle = block.register_forward_hook(_skip_block)
        else:
            handle = None
        try:
            err = loaded.test_error() if handle is not None else float("nan")
        finally:
            if handle is not None:
                handle.remove()
        rows.append({**base, "block_index": index, "block": name, "changes_shape": changes,
                     "deleted": handle is not None, "test_err": err, "intact_err": intact})  # fmt: skip
        if bar is not None:
            bar.update(1)
    run_row = {**base, "path": str(run.path), "blocks": len(rows), "dataset": run.spec["run"]["data"]["name"],
               "num_classes": loaded.num_classes, "test_size": len(loaded.test_y), "step": loaded.step,
               "intact_err": intact, "final_test_err": run.final("test_err")}  # fmt: skip
    return rows, run_row


def lesion(runs: list[R.Run], device: str = "cpu", progress: bool | None = None) -> ProbeResult:
    """Lesion every run; tables ``lesion`` (one row per run and block) and ``runs``."""
    dev = resolve_device(device)
    cache: dict = {}
    rows, run_rows = [], []
    total = sum(models.info(r.spec["run"]["model"]["name"]).blocks + 1 for r in runs)
    bar = _bar(total, progress)
    try:
        for run in runs:
            loaded = load_trained(run, dev, cache)
            block_rows, run_row = lesion_run(loaded, bar)
            rows.extend(block_rows)
            run_rows.append(run_row)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    tables = {
        "lesion": pd.DataFrame(rows, columns=LESION_COLUMNS),
        "runs": pd.DataFrame(run_rows, columns=RUN_COLUMNS),
    }
    settings = {
        "runs": [str(r.path) for r in runs],
        "device": str(dev),
        "unit": "block",
        "deletion": {
            "resnet": "branch F(x) set to zero: the block leaves its shortcut (relu(shortcut(x)) for "
                      "post-activation blocks, shortcut(x) for pre-activation ones)",
            "plain": "block replaced by the identity where its input and output shapes match; "
                     "shape-changing blocks are not deleted (NaN)",
        },
        "evaluation": "test set, eval mode (trained BN statistics), fp32",
    }
    return ProbeResult(KIND, tables, settings, describe(dev))


def _bar(total: int, progress: bool | None):
    if not (sys.stderr.isatty() if progress is None else progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="lesion", unit="eval", leave=False, dynamic_ncols=True, file=sys.stderr)
