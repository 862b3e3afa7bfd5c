"""What a trained run adds to spec.json, and whether an existing one is the same run.

The run directory's writer (gradlab.run_writer) writes spec.json for every run;
the trainer adds the resolved RunSpec and what the report needs beside it (the data's
shape and sizes, the recipe, the environment). Before resuming into a run directory it
checks that the spec recorded there is this run's, so that a run is never continued with
other settings (gradlab.runs holds the rest of the contract).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gradlab import runs
from gradlab.config import RunSpec
from gradlab.errors import RunDirError
from gradlab.file_io import read_json

__all__ = ["check_existing", "run_fields"]


def run_fields(spec: RunSpec, ds, env: dict) -> dict:
    """The spec.json entries of a trained run (``ds``: the gradlab.data.Dataset it trains on)."""
    return {
        "experiment": spec.experiment,  # (as named, whatever the folder resolves to)
        "seed": spec.seed,
        "run": spec.to_dict(),
        "data": {
            **dataclasses.asdict(spec.data),
            "shape": list(ds.shape),
            "num_classes": ds.num_classes,
            "train_size": len(ds.train_y),
            "test_size": len(ds.test_y),
            "val_size": 0 if ds.val_y is None else len(ds.val_y),
        },
        "recipe": dataclasses.asdict(spec.recipe),
        "env": env,
    }


def check_existing(run_dir: Path, spec: RunSpec) -> dict | None:
    """The existing spec.json if it describes this very run; an error if another."""
    if not (run_dir / runs.SPEC).exists():
        return None
    old = read_json(run_dir / runs.SPEC)
    # Settings added to RunSpec after the run was written had their default's behaviour then.
    before = _with_defaults(old.get("run", {}), RunSpec().to_dict())
    if before != spec.to_dict():
        changed = sorted(_diff_keys(before, spec.to_dict()))
        raise RunDirError(
            f"{run_dir} already holds a run with different settings ({', '.join(changed) or 'unknown'}); "
            f"it is left untouched: choose another --runs-dir or experiment name, or delete that folder"
        )
    return old


def _with_defaults(record: dict, defaults: dict) -> dict:
    """`record` with the keys it lacks taken from `defaults`, nested dicts included."""
    out = dict(record)
    for k, v in defaults.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, dict) and isinstance(out[k], dict):
            out[k] = _with_defaults(out[k], v)
    return out


def _diff_keys(a: dict, b: dict, prefix: str = "") -> set[str]:
    out = set()
    for k in set(a) | set(b):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out |= _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.add(prefix + k)
    return out
