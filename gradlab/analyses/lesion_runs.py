"""Trained runs for a lesion (Veit et al. 2016): found, checked, and rebuilt with their test set.

A run can be lesioned when it finished, kept its checkpoint.pt, trained a plain or
residual zoo net with ReLUs, and read an in-memory dataset; its model is rebuilt from
spec.json and its test set normalized with the training set's channel statistics,
exactly as training did (gradlab.data.loader).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from gradlab import data as datasets
from gradlab import families as fam
from gradlab import models
from gradlab import runs as R
from gradlab.checkpoint import load_checkpoint
from gradlab.config import DataSpec, ModelSpec
from gradlab.data.loader import eval_batches
from gradlab.errors import ModelError, RunDirError

__all__ = ["LoadedRun", "collect_runs", "default_out_dir", "load_trained"]


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
