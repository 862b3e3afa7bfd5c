"""Turn run directories into the tidy frames the figures, tables and summary draw from.

Everything here is pandas/numpy on data read through gradlab.runs; no torch, no model
code. Errors stay fractions in [0, 1] in these frames (figures and tables show percent).

Frames (one row per ...):
    run_table      run: identity, model, state, progress, a short note for non-finished runs
    curves         run × evaluation: step, train_err, test_err
    scalars        run × logged scalar × step, for runs of someone's own loop (gradlab.watch)
    finals         run: final errors (see `finals`)
    by_model       (family, depth): n, mean/std/min/max/95 % interval of the final errors over seeds
The per-layer statistics are shaped in gradlab.report.layer_frames.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradlab import families as fam
from gradlab import runs as R
from gradlab.seed_noise import from_summary

# ---------------------------------------------------------------------------
# runs and their states
# ---------------------------------------------------------------------------


def run_key(run: R.Run) -> str:
    """A readable id: the run name (build.py sets a longer one when two runs share a name)."""
    return str(getattr(run, "report_key", None) or run.name)


def run_seed(run: R.Run) -> int:
    seed = run.spec.get("seed", run.spec.get("recipe", {}).get("seed", 0))
    try:
        return int(seed)
    except (TypeError, ValueError):
        return 0


def total_steps(run: R.Run) -> int:
    total = run.status.get("total_steps") or run.spec.get("recipe", {}).get("steps") or 0
    try:
        return int(total)
    except (TypeError, ValueError):
        return 0


def reached_step(run: R.Run) -> int:
    """How far a run got: its status step, or its last metrics row where that is later (a
    live run writes status.json at checkpoints, metrics at every evaluation)."""
    step = int(run.status.get("step") or 0)
    if "step" in run.metrics and len(run.metrics):
        step = max(step, int(run.metrics["step"].max()))
    return step


def state_note(run: R.Run) -> str:
    """What happened to an unfinished run and where, e.g. "diverged @ step 1200"; "" if done."""
    state = run.state
    step = run.status.get("step")
    total = total_steps(run)
    if state == R.DONE:
        return ""
    if state == R.DIVERGED:
        # the step whose loss was non-finite (recorded or not); the recorder may have seen
        # a non-finite gradient earlier, which the run's message names
        nonfinite = run.status.get("nonfinite") or {}
        where = run.status.get("diverged_step", nonfinite.get("step", step))
        return f"diverged @ step {where}" if where is not None else "diverged"
    if state == R.PENDING:
        return "pending"
    at = f" @ step {step}" if step is not None else ""
    of = f"/{total}" if step is not None and total else ""
    if state == R.RUNNING:
        return f"running @ step {reached_step(run)}{of}"
    return f"{state}{at}{of}"  # crashed, failed, interrupted, anything newer


def run_table(runs: list[R.Run]) -> pd.DataFrame:
    """One row per run, sorted plain before ResNet, then by depth and seed."""
    rows = []
    for run in runs:
        model = run.model
        rows.append(
            {
                "run": run_key(run),
                "path": str(run.path),
                "experiment": run.spec.get("experiment", ""),
                "model": model.get("name", ""),
                "family": run.family_key,
                "depth": run.depth,
                "seed": run_seed(run),
                "label": fam.label(run.family_key, run.depth),
                "params": int(model.get("params", 0) or 0),
                "state": run.state,
                "step": int(run.status.get("step", 0) or 0),
                "total_steps": total_steps(run),
                "note": state_note(run),
                "has_layers": run.has_layers,
            }
        )
    cols = ["run", "path", "experiment", "model", "family", "depth", "seed", "label", "params", "state",
            "step", "total_steps", "note", "has_layers"]  # fmt: skip
    table = pd.DataFrame(rows, columns=cols)
    return sort_models(table).reset_index(drop=True)


def sort_models(frame: pd.DataFrame, extra=("seed",)) -> pd.DataFrame:
    """Plain nets first (as in the paper's tables), then ResNets; by depth within each."""
    key = frame["family"].map(fam.sort_key)
    by = ["_family_order", "depth", *[c for c in extra if c in frame]]
    return frame.assign(_family_order=key).sort_values(by, kind="stable").drop(columns="_family_order")


def model_notes(table: pd.DataFrame) -> dict[tuple[str, int], str]:
    """Per (family, depth): the notes of its non-finished runs ("seed 1 diverged @ step 1200")."""
    notes: dict[tuple[str, int], str] = {}
    for (family, depth), group in table.groupby(["family", "depth"], sort=False):
        bad = group[group["note"] != ""]
        if bad.empty:
            continue
        if len(group) == 1:
            notes[(family, depth)] = bad["note"].iloc[0]
        else:
            notes[(family, depth)] = "; ".join(f"seed {s} {n}" for s, n in zip(bad["seed"], bad["note"]))
    return notes


# ---------------------------------------------------------------------------
# curves and final errors
# ---------------------------------------------------------------------------


def curves(runs: list[R.Run]) -> pd.DataFrame:
    """Training and test error at every evaluation of every run (fractions)."""
    parts = []
    for run in runs:
        m = run.metrics
        if m.empty or "step" not in m or not {"train_err", "test_err"} & set(m.columns):
            continue
        part = pd.DataFrame(
            {
                "step": pd.to_numeric(m["step"], errors="coerce"),
                "train_err": pd.to_numeric(m.get("train_err", np.nan), errors="coerce"),
                "test_err": pd.to_numeric(m.get("test_err", np.nan), errors="coerce"),
            }
        )
        part.insert(0, "run", run_key(run))
        part.insert(1, "family", run.family_key)
        part.insert(2, "depth", run.depth)
        part.insert(3, "seed", run_seed(run))
        parts.append(part)
    cols = ["run", "family", "depth", "seed", "step", "train_err", "test_err"]
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]


def scalars(runs: list[R.Run]) -> pd.DataFrame:
    """Every scalar logged by a run of someone's own loop (``rec.log``), in long format:
    run, family, depth, seed, label, name, step, value. Runs of gradlab's trainer have
    their errors drawn as training curves instead."""
    cols = ["run", "family", "depth", "seed", "label", "name", "step", "value"]
    parts = []
    for run in runs:
        m = run.metrics
        if run.spec.get("source") != R.WATCH_SOURCE or m.empty or "step" not in m:
            continue
        long = m.melt(id_vars="step", var_name="name", value_name="value")
        long["value"] = pd.to_numeric(long["value"], errors="coerce")
        long = long[np.isfinite(long["value"].to_numpy(dtype=float))]
        parts.append(long.assign(**identity(run)))
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]


def final_errors(metrics: pd.DataFrame) -> tuple[float, float, float]:
    """(step, train_err, test_err) at the last evaluation.

    The last evaluation is the last metrics row with a test error; the training error is
    read from that same row (the last recorded one before it if that row has none). A
    run that never evaluated gives NaN test error and its last training error.
    """
    if metrics.empty or "step" not in metrics:
        return float("nan"), float("nan"), float("nan")
    test = metrics["test_err"] if "test_err" in metrics else pd.Series(np.nan, index=metrics.index)
    train = metrics["train_err"] if "train_err" in metrics else pd.Series(np.nan, index=metrics.index)
    evaluated = test.notna()
    if evaluated.any():
        last = evaluated[evaluated].index[-1]
        upto = metrics.index <= last
    else:
        last, upto = None, np.ones(len(metrics), dtype=bool)
    tr = train[upto].dropna()
    train_err = float(tr.iloc[-1]) if not tr.empty else float("nan")
    test_err = float(test.loc[last]) if last is not None else float("nan")
    if last is not None:
        step = float(metrics["step"].loc[last])
    elif not tr.empty:
        step = float(metrics["step"].loc[tr.index[-1]])
    else:
        step = float("nan")
    return step, train_err, test_err


def final_val(metrics: pd.DataFrame, step: float) -> float:
    """Validation error at ``step`` (the last evaluation), NaN without a validation split."""
    if "val_err" not in metrics or "step" not in metrics or not math.isfinite(step):
        return float("nan")
    at = metrics.loc[metrics["step"] == step, "val_err"].dropna()
    return float(at.iloc[-1]) if not at.empty else float("nan")


def finals(runs: list[R.Run]) -> pd.DataFrame:
    """One row per run: final step, train_err, test_err and val_err (fractions; val_err NaN
    without a validation split), state and note."""
    table = run_table(runs).set_index("run")
    rows = []
    for run in runs:
        step, train_err, test_err = final_errors(run.metrics)
        rows.append({"run": run_key(run), "final_step": step, "train_err": train_err, "test_err": test_err,
                     "val_err": final_val(run.metrics, step)})
    frame = pd.DataFrame(rows, columns=["run", "final_step", "train_err", "test_err", "val_err"]).set_index("run")
    out = table[["family", "depth", "seed", "label", "params", "state", "note"]].join(frame)
    return out.reset_index()


ERRORS = ("train", "test", "val")


def by_model(finals_frame: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Final errors per (family, depth) over seeds: n, and for train, test and val errors
    mean, std (ddof=1), min, max and ``ci``, the half-width of the 95 % t-interval of the
    mean (gradlab.seed_noise); std and ci are NaN when n == 1. n_unfinished: runs of the
    model that did not finish (their note is in `note`)."""
    stats = [f"{e}_{s}" for e in ERRORS for s in ("mean", "std", "min", "max", "ci")]
    cols = ["family", "depth", "label", "params", "n", *stats, "seeds", "n_unfinished", "note"]
    if finals_frame.empty:
        return pd.DataFrame(columns=cols)
    frame = finals_frame if "val_err" in finals_frame else finals_frame.assign(val_err=np.nan)
    g = frame.groupby(["family", "depth"], sort=False)
    spread = {f"{e}_{s}": (f"{e}_err", s) for e in ERRORS for s in ("mean", "std", "min", "max")}
    agg = g.agg(
        label=("label", "first"),
        params=("params", "first"),
        n=("run", "size"),
        **spread,
        seeds=("seed", lambda s: ",".join(str(v) for v in sorted(s))),
        n_unfinished=("note", lambda s: int((s != "").sum())),
    ).reset_index()
    for e in ERRORS:
        counts = g[f"{e}_err"].count().to_numpy()
        agg[f"{e}_ci"] = [from_summary(m, s, c).half for m, s, c in zip(agg[f"{e}_mean"], agg[f"{e}_std"], counts)]
    notes = model_notes(table if table is not None else finals_frame)
    agg["note"] = [notes.get((f, d), "") for f, d in zip(agg["family"], agg["depth"])]
    return sort_models(agg, extra=())[cols].reset_index(drop=True)


def identity(run: R.Run) -> dict:
    return {
        "run": run_key(run),
        "family": run.family_key,
        "depth": run.depth,
        "seed": run_seed(run),
        "label": fam.label(run.family_key, run.depth),
    }


def nonfinite(runs: list[R.Run]) -> list[dict]:
    """{"label", "what", "layer", "step"} of the first non-finite value each run's recorder
    found (status.json), in the order of the runs."""
    out = []
    for run in runs:
        found = run.status.get("nonfinite")
        if isinstance(found, dict) and {"what", "layer", "step"} <= set(found):
            out.append({"label": fam.label(run.family_key, run.depth), **{k: found[k] for k in ("what", "layer", "step")}})
    return out
