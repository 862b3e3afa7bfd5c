"""Lesion study (Veit et al. 2016): delete one part of a trained net at a time, test it.

Veit et al. removed single residual blocks from trained ResNets at test time and found
that the error hardly changes (except at downsampling blocks), while removing a layer of a
plain net (VGG) destroys it: residual nets behave like ensembles of shallower paths.

This module runs the study; lesion_runs finds and rebuilds the trained runs, and
lesion_deletions says what is deleted and how (blocks of residual nets; layers or blocks of
plain nets, through hooks). Rows are in depth order; ``index`` is the block's position
(1 = input side) for blocks and the layer's position among the net's main-path weighted
layers (1 = the stem conv) for layers, so that plain-20's layers are 2..19. Test error is
measured on the run's test set, normalized with the training set's channel statistics
exactly as training did (gradlab.data.loader).
"""

from __future__ import annotations

import pandas as pd

from gradlab import families as fam
from gradlab import models
from gradlab import runs as R
from gradlab.analyses.lesion_deletions import (BLOCK, LAYER, UNITS, Deletion, deleted, deletions, layer_groups,
                                               unit_shapes)
from gradlab.analyses.lesion_runs import LoadedRun, collect_runs, default_out_dir, load_trained
from gradlab.analyses.result import ProbeResult
from gradlab.environment import describe, resolve_device
from gradlab.errors import ConfigError
from gradlab.progress import progress_bar

__all__ = ["KIND", "LESION_COLUMNS", "UNITS", "Deletion", "LoadedRun", "collect_runs", "default_out_dir",
           "deleted", "deletions", "layer_groups", "lesion", "load_trained", "no_deletion_warnings",
           "unit_shapes"]  # fmt: skip

KIND = "lesion"
LESION_COLUMNS = ["run", "model", "family", "depth", "seed", "unit", "index", "layer", "block", "block_index",
                  "changes_shape", "deleted", "test_err", "intact_err"]  # fmt: skip
RUN_COLUMNS = ["run", "path", "model", "family", "depth", "seed", "unit", "blocks", "units", "deleted",
               "dataset", "num_classes", "test_size", "step", "intact_err", "final_test_err"]  # fmt: skip


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
