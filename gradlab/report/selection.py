"""Choose a swept recipe value per model on validation error, never on test error.

For each family × depth × build option (and any other setting that differs), the value of
the selected key whose runs end with the lowest validation error, averaged over seeds. The
validation images are held out of the training set (`--val-split N`), as He et al. 2015
§4.2 hold out 5k of CIFAR-10's 50k training images (45k/5k) to tune on: a value chosen on
the test error would make the test error reported for it biased low.
"""

from __future__ import annotations

import math

import pandas as pd

from gradlab.errors import ConfigError
from gradlab.recipe_keys import short, shown

SPLITS = ("val", "test")


def check_request(keys, on: str = "val", swept=None, val_split: int | None = None) -> tuple[str, ...]:
    """The keys to select, checked before anything trains: on validation error only, one key,
    one that the runs vary, with a validation split to choose on."""
    keys = tuple(k for k in (keys or ()) if k)
    if not keys:
        return ()
    if on == "test":
        raise ConfigError("--select-on test is refused: a value chosen on the test error makes the test error "
                          "reported for it biased low; hold out validation images with --val-split N (He et al. "
                          "2015 §4.2 tune on 5k of 50k) and select on them (--select-on val)")
    if on not in SPLITS:
        raise ConfigError(f"--select-on {on}: choose on val (validation error)")
    if len(keys) > 1:
        raise ConfigError(f"--select {','.join(keys)}: select one key at a time, such as --select {keys[0]}")
    if swept is not None and keys[0] not in swept:
        what = f"the sweep varies {', '.join(swept)}" if swept else "nothing is swept"
        raise ConfigError(f"--select {keys[0]}: {keys[0]} takes one value here ({what}); sweep it first, "
                          f"such as --{keys[0].replace('_', '-')} 0.01,0.03,0.1 or --set {keys[0]}=V1,V2")
    if val_split is not None and val_split <= 0:
        raise ConfigError(f"--select {keys[0]} chooses on validation error, and no images are held out: "
                          f"add --val-split N (such as --val-split 300 on digits)")
    return keys


def choose(sensitivity: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per (family, depth): the value with the lowest mean validation error over seeds, from
    the rows of gradlab.report.sensitivity.frame (one per run). A value with an unfinished run
    is chosen only when every value has one. Columns: family, depth, value, val_mean, n, note."""
    cols = ["family", "depth", "value", "val_mean", "n", "note"]
    if sensitivity.empty or sensitivity["val_err"].isna().all():
        raise ConfigError(f"--select {key}: no run has a validation error to choose on; train with --val-split N")
    rows = []
    for (family, depth), runs in sensitivity.groupby(["family", "depth"], sort=False):
        by_value = runs.groupby("value", sort=True).agg(val_mean=("val_err", "mean"), n=("run", "size"),
                                                        unfinished=("note", lambda s: int((s != "").sum())))
        usable = by_value[by_value["val_mean"].notna()]
        finished = usable[usable["unfinished"] == 0]
        pool = finished if not finished.empty else usable
        if pool.empty:
            rows.append({"family": family, "depth": depth, "value": math.nan, "val_mean": math.nan, "n": 0,
                         "note": "no validation error"})
            continue
        best = pool["val_mean"].idxmin()
        rows.append({"family": family, "depth": depth, "value": best, "val_mean": float(pool.loc[best, "val_mean"]),
                     "n": int(pool.loc[best, "n"]), "note": "" if not finished.empty else "every value has an unfinished run"})
    return pd.DataFrame(rows, columns=cols)


def chosen_runs(sensitivity: pd.DataFrame, choices: pd.DataFrame) -> set[str]:
    """The run keys at each model's chosen value."""
    pick = choices.set_index(["family", "depth"])["value"]
    keep = [r for r, f, d, v in zip(sensitivity["run"], sensitivity["family"], sensitivity["depth"],
                                    sensitivity["value"]) if (f, d) in pick.index and pick[(f, d)] == v]
    return set(keep)


def chosen_text(key: str, value, val_mean: float) -> str:
    """'lr 0.1 (val 3.3%)': the chosen value and the validation error it was chosen on."""
    return f"{short(key)} {shown(value)} (val {100 * val_mean:.1f}%)" if math.isfinite(val_mean) else "–"
