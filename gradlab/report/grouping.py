"""Which runs are seeds of one model: runs are grouped by everything that differs between
them, so that runs of two recipes are never pooled as seeds.

Family, depth and build options already name a model (gradlab.runs.Run.family_key); what
else differs between the runs of a report — every recipe value, the data's settings, or the
config of a run of someone's own loop — becomes the run's ``setting`` ("lr 0.1, wd 0.0005"),
part of its family key and label ("Fixup-20 (lr 0.1)"). A runs folder holding several
recipes is reported as it is: one row per recipe, never a mean over them.
"""

from __future__ import annotations

from gradlab import runs as R
from gradlab.recipe_keys import BOOKKEEPING, DATA_KEYS, short, shown

IGNORED = {"seed"}  # what seeds of one model differ in


def run_settings(run: R.Run) -> dict:
    """What a run was trained with, flat: its recipe (bookkeeping left out) and data settings
    for gradlab's trainer; the config of a run of someone's own loop (gradlab.watch)."""
    spec = run.spec
    if spec.get("source") == R.WATCH_SOURCE or "recipe" not in spec:
        return _flat(spec.get("config") or {})
    recipe = {k: v for k, v in (spec.get("recipe") or {}).items() if k not in BOOKKEEPING}
    data = {f"data.{k}": v for k, v in (spec.get("data") or {}).items() if k in DATA_KEYS}
    return {**recipe, **data}


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _hashable(value):
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def differing(settings: list[dict], ignore=(), within: list | None = None) -> list[dict]:
    """For each run's settings, the ones whose value is not the same in every run (a key
    some runs lack differs too, as None), in the order the keys first appear. ``within``:
    a group per run (its model); then only keys that differ inside some group count, so runs
    already told apart by their names keep their labels."""
    skip = IGNORED | set(ignore)
    groups = within if within is not None else [None] * len(settings)
    keys = list(dict.fromkeys(k for s in settings for k in s if k not in skip))
    varies = [k for k in keys if any(len({_hashable(s.get(k)) for s, g in zip(settings, groups) if g == group}) > 1
                                     for group in set(groups))]
    return [{k: s.get(k) for k in varies} for s in settings]


def setting_label(setting: dict) -> str:
    """'lr 0.1, wd 0.0005' (data settings by their own name: 'val_split 300')."""
    return ", ".join(f"{short(k.removeprefix('data.'))} {shown(v)}" for k, v in setting.items())


def assign_settings(runs: list[R.Run], ignore=()) -> dict[str, dict]:
    """Set each run's ``setting`` (the label of what tells it from the other runs of its
    family and build options, without the keys in ``ignore``, e.g. a key chosen on
    validation) and return the differing settings by run path."""
    for run in runs:
        run.setting = ""
    found = differing([run_settings(r) for r in runs], ignore, within=[r.family_key for r in runs])
    for run, setting in zip(runs, found):
        run.setting = setting_label(setting)
    return {str(r.path): s for r, s in zip(runs, found)}
