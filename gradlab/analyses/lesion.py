"""Lesion study (Veit et al. 2016): delete one part of a trained net at a time, test it.

Veit et al. removed single residual blocks from trained ResNets at test time and found
that the error hardly changes (except at downsampling blocks), while removing a layer of a
plain net (VGG) destroys it: residual nets behave like ensembles of shallower paths.

The unit deleted follows the paper: blocks of residual nets, and for plain nets single
layers (``unit="layer"``, the default) or, to compare like with like, whole blocks
(``unit="block"``). In eval mode with the trained BN statistics, through forward hooks
(the models are not edited):

- residual block: its branch F(x) is replaced by zeros (a hook on the block's
  ``branch_out``), so the block computes what its own definition leaves without F: for
  the CIFAR, ImageNet and seed nets relu(shortcut(x)), which is x for an identity shortcut
  (x is already the output of a ReLU); for pre-activation nets shortcut(x). Every block
  can be deleted, also the downsampling ones (their shortcut changes the shape).
- plain layer: one weighted layer of a plain block's main path with what belongs to it up
  to the next weighted layer, read off the block's ``main_layers``. A pre-hook on the
  layer's first module keeps its input x, and a hook on its last module returns x instead
  of that module's output:

    post-activation (conv -> BN -> ReLU; CIFAR and ImageNet basic/bottleneck blocks):
        layer k = (convk, bnk); bnk's output is replaced by x. The ReLU after it (inside
        the block, or the block's final ReLU after the last layer) then gives relu(x) = x,
        because x is itself a ReLU output (or the max-pool of one, for ImageNet's first
        block), so the layer is exactly the identity.
    pre-activation (BN -> ReLU -> conv; preplain basic and bottleneck blocks):
        layer k = (bnk, convk); convk's output is replaced by x (no ReLU follows it).
    seed blocks (conv -> ReLU, no BN): layer k = (convk,); convk's output is replaced.
        Both seed convs change the channels (16 -> 30 -> 16), so no seed layer can go.

  Only layers whose input and output shapes match (stride 1, same channels) are deleted;
  the others (a stage's first, strided conv; bottleneck 1x1 reductions and expansions;
  seed convs) have no identity to stand in for them and get a NaN error. The stem conv and
  the classifier are not block layers and are never deleted.
- plain block (``unit="block"``): the whole block is replaced by the identity, y = x, the
  same way (pre-hook and hook on the block), where its input and output shapes match.

Rows are in depth order; ``index`` is the block's position (1 = input side) for blocks and
the layer's position among the net's main-path weighted layers (1 = the stem conv) for
layers, so that plain-20's layers are 2..19. Test error is measured on the run's test set,
normalized with the training set's channel statistics exactly as training did
(gradlab.data.loader).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from gradlab import data as datasets
from gradlab import families as fam
from gradlab import models
from gradlab import runs as R
from gradlab.checkpoint import load_checkpoint
from gradlab.config import DataSpec, ModelSpec
from gradlab.environment import describe, resolve_device
from gradlab.errors import ConfigError, ModelError, RunDirError
from gradlab.data.loader import eval_batches
from gradlab.models.probe_points import CONV, FC
from gradlab.analyses.result import ProbeResult
from gradlab.progress import progress_bar

__all__ = ["KIND", "LESION_COLUMNS", "UNITS", "Deletion", "LoadedRun", "collect_runs", "default_out_dir",
           "deleted", "deletions", "layer_groups", "lesion", "load_trained", "no_deletion_warnings",
           "unit_shapes"]  # fmt: skip

KIND = "lesion"
BLOCK, LAYER = "block", "layer"
UNITS = (LAYER, BLOCK)  # what a plain net loses per deletion; residual nets always lose blocks
LESION_COLUMNS = ["run", "model", "family", "depth", "seed", "unit", "index", "layer", "block", "block_index",
                  "changes_shape", "deleted", "test_err", "intact_err"]  # fmt: skip
RUN_COLUMNS = ["run", "path", "model", "family", "depth", "seed", "unit", "blocks", "units", "deleted",
               "dataset", "num_classes", "test_size", "step", "intact_err", "final_test_err"]  # fmt: skip


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
            except (RunDirError, ModelError) as e:
                if named:
                    raise
                warnings.append(f"skipped {d}: {e}")
    found = list({r.path.resolve(): r for r in found}.values())
    if not found:
        where = ", ".join(map(str, paths))
        raise RunDirError(f"no finished run with a checkpoint under {where}"
                          + (f" ({len(warnings)} left out: {'; '.join(warnings)})" if warnings else "")
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
    if not zipfile.is_zipfile(run.path / R.CHECKPOINT):  # torch.save writes a zip: a cut or foreign file is not one
        raise RunDirError(f"{run.path / R.CHECKPOINT} is damaged (not the archive torch.save writes: cut short or "
                          "overwritten); it cannot be lesioned")  # fmt: skip
    model = run.spec.get("run", {}).get("model", {})
    if "name" not in model or "data" not in run.spec.get("run", {}):
        raise RunDirError(f"{run.path / R.SPEC} does not say which model and data the run used")
    if run.spec["run"]["data"].get("name") == "imagefolder":
        raise RunDirError(f"{run.path} trained on imagefolder data, whose test set streams from disk; lesion reads "
                          f"in-memory datasets only (cifar10/100, mnist, fashion-mnist, digits, synthetic)")
    if run.family == fam.PLAIN and (run.model.get("options") or {}).get("act", "relu") != "relu":
        raise ModelError(f"{run.path} is a plain net with {run.model['options']['act']}: deleting a layer leaves "
                         "that activation applied to the layer's input, which is no identity; lesions need "
                         "ReLU nets")  # fmt: skip
    if not fam.is_known(run.family):
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
    device: torch.device
    mean: torch.Tensor  # the training set's channel statistics, on the device
    std: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    step: int = 0

    def batches(self, x_uint8: torch.Tensor, y: torch.Tensor):
        """Test images normalized as training normalized them, in batches on the device."""
        return eval_batches(x_uint8, y, self.mean, self.std, self.device)

    @torch.no_grad()
    def test_error(self) -> float:
        """Fraction of test images misclassified (fp32, as training evaluated on a CPU)."""
        wrong = torch.zeros((), device=self.device)
        for xb, yb in self.batches(self.test_x, self.test_y):
            wrong += (self.model(xb).argmax(1) != yb).sum()
        return float(wrong) / len(self.test_y)


def load_trained(run: R.Run, device: torch.device, data_cache: dict | None = None) -> LoadedRun:
    """Rebuild a run's model from spec.json, load checkpoint.pt, and get its test set."""
    spec = run.spec["run"]
    data_info = run.spec.get("data", {})
    try:
        data_spec = DataSpec(**{**spec["data"], "synthetic_shape": tuple(spec["data"].get("synthetic_shape", ()))})
        model_spec = ModelSpec(**spec["model"])
    except TypeError as e:
        raise RunDirError(f"{run.path / R.SPEC} has a data or model spec this gradlab cannot read ({e})") from e
    cache = {} if data_cache is None else data_cache
    if data_spec not in cache:  # the dataset and its channel statistics (a pass over all of it), once
        loaded = datasets.load(data_spec)
        cache[data_spec] = loaded, loaded.channel_stats()
    ds, stats = cache[data_spec]
    model = models.build(model_spec.name, num_classes=int(data_info.get("num_classes", ds.num_classes)),
                         in_channels=int(data_info.get("shape", ds.shape)[0]), **model_spec.build_options())
    state = load_checkpoint(run.path / R.CHECKPOINT, device)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise RunDirError(f"{run.path / R.CHECKPOINT} does not hold the weights of {model_spec.name} ({e}); "
                          f"was the run directory edited by hand?") from e  # fmt: skip
    model.to(device).eval()
    mean, std = (t.to(device) for t in stats)
    return LoadedRun(run, model, device, mean, std, ds.test_x, ds.test_y, ds.num_classes, int(state.get("step", 0)))


@dataclass(frozen=True)
class Deletion:
    """One thing to delete: a whole block, or one weighted layer of a plain block.

    ``first`` receives the unit's input (pre-hook) and ``last`` has its output replaced
    (module paths; both the block itself for a block). A residual block is deleted through
    its ``branch_out`` instead.
    """

    unit: str  # "block" | "layer"
    index: int  # depth order: block position, or position among main-path weighted layers
    layer: str  # the block's name, or the path of the layer's weighted module
    block: str
    block_index: int
    first: str
    last: str
    residual: bool = False


def layer_groups(block: torch.nn.Module) -> list[tuple[str, ...]]:
    """A block's ``main_layers`` split into layers: one weighted module each, with its norm if any.

    Post-activation blocks list conv before BN (a layer is conv, BN and the ReLU after it),
    pre-activation blocks BN before conv (BN, ReLU, then the conv closes the layer).
    """
    names = [(attr, kind) for attr, kind, _ in block.main_layers]
    groups: list[list[str]] = []
    if names[0][1] == CONV:
        for attr, kind in names:
            if kind == CONV:
                groups.append([attr])
            else:
                groups[-1].append(attr)
    else:
        current: list[str] = []
        for attr, kind in names:
            current.append(attr)
            if kind == CONV:
                groups.append(current)
                current = []
        if current:
            raise ModelError(f"{type(block).__name__}.main_layers ends with {current} after its last conv; "
                             f"a lesion layer must end with its weighted module")  # fmt: skip
    return [tuple(g) for g in groups]


def deletions(model: torch.nn.Module, unit: str = LAYER) -> list[Deletion]:
    """What to delete, in depth order: blocks of residual nets; layers or blocks of plain nets."""
    blocks = model.residual_blocks()
    residual = any(block.residual for _, block in blocks)
    if residual or unit == BLOCK:
        return [Deletion(BLOCK, i, name, name, i, name, name, block.residual)
                for i, (name, block) in enumerate(blocks, start=1)]  # fmt: skip
    weighted = [p.name for p in model.probe_points() if p.role == "main" and p.kind in (CONV, FC)]
    position = {name: i for i, name in enumerate(weighted, start=1)}
    out = []
    for b, (name, block) in enumerate(blocks, start=1):
        for group in layer_groups(block):
            conv = next(a for a in group if f"{name}.{a}" in position)
            out.append(Deletion(LAYER, position[f"{name}.{conv}"], f"{name}.{conv}", name, b,
                                f"{name}.{group[0]}", f"{name}.{group[-1]}"))  # fmt: skip
    return out


def _zero_branch(module, inputs, output):
    return torch.zeros_like(output)


@contextmanager
def deleted(model: torch.nn.Module, d: Deletion) -> Iterator[None]:
    """Run the model with `d` deleted: a residual block's F(x) zeroed, else the unit skipped.

    Skipping keeps the input of ``d.first`` (pre-hook) and returns it as the output of
    ``d.last``; the hooks are removed on exit, so the model is left as it was.
    """
    modules = dict(model.named_modules())
    if d.residual:
        handles = [modules[f"{d.block}.branch_out"].register_forward_hook(_zero_branch)]
    else:
        kept: list[torch.Tensor] = []

        def keep(module, inputs):
            kept.append(inputs[0])

        def give(module, inputs, output):
            return kept.pop()

        handles = [modules[d.first].register_forward_pre_hook(keep), modules[d.last].register_forward_hook(give)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def unit_shapes(model: torch.nn.Module, x: torch.Tensor, plan: list[Deletion]) -> list[tuple[tuple, tuple]]:
    """(input shape of ``first``, output shape of ``last``) per deletion, from one forward pass on x."""
    modules = dict(model.named_modules())
    shapes = [[(), ()] for _ in plan]

    def record_in(i):
        def hook(module, inputs):
            shapes[i][0] = tuple(inputs[0].shape)
        return hook

    def record_out(i):
        def hook(module, inputs, output):
            shapes[i][1] = tuple(output.shape)
        return hook

    hooks = []
    for i, d in enumerate(plan):
        hooks.append(modules[d.first].register_forward_pre_hook(record_in(i)))
        hooks.append(modules[d.last].register_forward_hook(record_out(i)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [(tuple(a), tuple(b)) for a, b in shapes]


def lesion_run(loaded: LoadedRun, unit: str = LAYER, bar=None) -> tuple[list[dict], dict]:
    """Test error with each unit deleted in turn (rows in depth order) and the run's row."""
    run, model = loaded.run, loaded.model
    intact = loaded.test_error()
    plan = deletions(model, unit)
    base = {"run": run.name, "model": run.spec["run"]["model"]["name"], "family": run.family, "depth": run.depth,
            "seed": int(run.spec.get("seed", 0))}  # fmt: skip
    rows = []
    xb, _ = next(loaded.batches(loaded.test_x[:2], loaded.test_y[:2]))
    for d, (in_shape, out_shape) in zip(plan, unit_shapes(model, xb, plan), strict=True):
        changes = in_shape != out_shape
        doable = d.residual or not changes
        err = float("nan")
        if doable:
            with deleted(model, d):
                err = loaded.test_error()
        rows.append({**base, "unit": d.unit, "index": d.index, "layer": d.layer, "block": d.block,
                     "block_index": d.block_index, "changes_shape": changes, "deleted": doable,
                     "test_err": err, "intact_err": intact})  # fmt: skip
        if bar is not None:
            bar.update(1)
    run_row = {**base, "path": str(run.path), "unit": plan[0].unit if plan else unit, "blocks": model.blocks,
               "units": len(rows), "deleted": sum(r["deleted"] for r in rows),
               "dataset": run.spec["run"]["data"]["name"], "num_classes": loaded.num_classes,
               "test_size": len(loaded.test_y), "step": loaded.step, "intact_err": intact,
               "final_test_err": run.final("test_err")}  # fmt: skip
    return rows, run_row


def _planned(run: R.Run, unit: str) -> int:
    """Evaluations a run needs (for the progress bar): its intact net plus one per unit.

    A zoo net's main-path weighted layers are its blocks' layers plus the stem conv and fc.
    """
    info = models.info(run.spec["run"]["model"]["name"])
    per_layer = not fam.get(info.family).residual and unit == LAYER
    return (info.depth - 2 if per_layer else info.blocks) + 1


def lesion(runs: list[R.Run], unit: str = LAYER, device: str = "cpu", progress: bool | None = None) -> ProbeResult:
    """Lesion every run; tables ``lesion`` (one row per run and deletion) and ``runs``.

    unit: what a plain net loses per deletion, "layer" (Veit et al.'s plain-net lesion) or
    "block" (the same unit as residual nets); residual nets always lose whole blocks.
    """
    if unit not in UNITS:
        raise ConfigError(f"unit must be one of {', '.join(UNITS)}, not {unit!r}")
    dev = resolve_device(device)
    cache: dict = {}
    rows, run_rows = [], []
    bar = progress_bar(sum(_planned(r, unit) for r in runs), "lesion", "eval", progress)
    try:
        for run in runs:
            loaded = load_trained(run, dev, cache)
            unit_rows, run_row = lesion_run(loaded, unit, bar)
            rows.extend(unit_rows)
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
    plain = {
        LAYER: "one weighted layer of a block's main path with its BN and ReLU (conv-BN-ReLU, or BN-ReLU-conv in "
               "pre-activation nets) replaced by the identity where its input and output shapes match; "
               "shape-changing layers are not deleted (NaN); stem conv and fc are never deleted",
        BLOCK: "block replaced by the identity where its input and output shapes match; "
               "shape-changing blocks are not deleted (NaN)",
    }  # fmt: skip
    settings = {
        "runs": [str(r.path) for r in runs],
        "device": str(dev),
        "unit": {fam.PLAIN: unit, fam.RESNET: BLOCK},
        "index": {BLOCK: "block position, 1 = input side",
                  LAYER: "position among the net's main-path weighted layers, 1 = the stem conv"},  # fmt: skip
        "deletion": {
            fam.RESNET: "branch F(x) set to zero: the block leaves its shortcut (relu(shortcut(x)) for "
                      "post-activation blocks, shortcut(x) for pre-activation ones)",
            fam.PLAIN: plain[unit],
        },
        "evaluation": "test set, eval mode (trained BN statistics), fp32",
    }
    return ProbeResult(KIND, tables, settings, describe(dev))


def no_deletion_warnings(result: ProbeResult) -> list[str]:
    """A warning per run of which nothing could be deleted (e.g. seed plain nets per layer)."""
    out = []
    for _, row in result["runs"].iterrows():
        if row["deleted"] == 0 and row["units"] > 0:
            hint = "; try --plain-unit block" if row["unit"] == LAYER else ""
            out.append(f"{row['run']}: no {row['unit']} keeps its input's shape, so none was deleted "
                       f"(all errors NaN){hint}")  # fmt: skip
    return out
