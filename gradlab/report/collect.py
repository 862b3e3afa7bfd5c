"""Turn run directories into the tidy frames the figures, tables and summary draw from.

Everything here is pandas/numpy on data read through gradlab.runs; no torch, no model
code. Errors stay fractions in [0, 1] in these frames (figures and tables show percent).

Frames (one row per ...):
    run_table      run: identity, model, state, progress, a short note for non-finished runs
    curves         run × evaluation: step, train_err, test_err
    finals         run: final errors (see `finals`)
    by_model       (family, depth): n, mean/std/min/max of the final errors over seeds
    gradient_flow  run × phase (init/early/end) × stat × layer position
    responses      run × BN layer at the end of training (Fig. 7)
Layer statistics are read once per run with `read_layer_stats`, which asks Parquet for
the needed stats only (a row filter) and keeps layer names as categoricals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from gradlab import families as fam
from gradlab import runs as R
from gradlab import stat_names as S
from gradlab.along_depth import positive_logs
from gradlab.errors import RunDirError

# the statistics the report draws
REPORT_STATS = (S.GRAD_NORM, S.ACT_GRAD_NORM, S.ACT_STD)
PHASES = ("init", "early", "end")
EARLY_FRACTION = 0.05  # "early" = the recorded step nearest 5 % of training
WEIGHTED_KINDS = ("conv", "fc")
MAIN = "main"

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


def state_note(run: R.Run) -> str:
    """What happened to an unfinished run and where, e.g. "diverged @ step 1200"; "" if done."""
    state = run.state
    step = run.status.get("step")
    total = total_steps(run)
    if state == R.DONE:
        return ""
    if state == R.DIVERGED:
        nonfinite = run.status.get("nonfinite") or {}
        where = nonfinite.get("step", step)
        return f"diverged @ step {where}" if where is not None else "diverged"
    if state == R.PENDING:
        return "pending"
    at = f" @ step {step}" if step is not None else ""
    of = f"/{total}" if step is not None and total else ""
    if state == R.RUNNING:
        return f"running{at}{of}"
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
                "family": run.family,
                "depth": run.depth,
                "seed": run_seed(run),
                "label": fam.label(run.family, run.depth),
                "params": int(model.get("params", 0) or 0),
                "state": run.state,
                "step": int(run.status.get("step", 0) or 0),
                "total_steps": total_steps(run),
                "note": state_note(run),
                "has_layers": (run.path / R.LAYERS).exists(),
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
        if m.empty or "step" not in m:
            continue
        part = pd.DataFrame(
            {
                "step": pd.to_numeric(m["step"], errors="coerce"),
                "train_err": pd.to_numeric(m.get("train_err", np.nan), errors="coerce"),
                "test_err": pd.to_numeric(m.get("test_err", np.nan), errors="coerce"),
            }
        )
        part.insert(0, "run", run_key(run))
        part.insert(1, "family", run.family)
        part.insert(2, "depth", run.depth)
        part.insert(3, "seed", run_seed(run))
        parts.append(part)
    cols = ["run", "family", "depth", "seed", "step", "train_err", "test_err"]
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


def finals(runs: list[R.Run]) -> pd.DataFrame:
    """One row per run: final step, train_err and test_err (fractions), state and note."""
    table = run_table(runs).set_index("run")
    rows = []
    for run in runs:
        step, train_err, test_err = final_errors(run.metrics)
        rows.append({"run": run_key(run), "final_step": step, "train_err": train_err, "test_err": test_err})
    frame = pd.DataFrame(rows, columns=["run", "final_step", "train_err", "test_err"]).set_index("run")
    out = table[["family", "depth", "seed", "label", "params", "state", "note"]].join(frame)
    return out.reset_index()


def by_model(finals_frame: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Final errors per (family, depth) over seeds: n, mean, std (ddof=1), min, max.

    std is the sample standard deviation; NaN when n == 1. n_unfinished: runs of the
    model that did not finish (their note is in `note`).
    """
    cols = ["family", "depth", "label", "params", "n", "train_mean", "train_std", "train_min", "train_max",
            "test_mean", "test_std", "test_min", "test_max", "seeds", "n_unfinished", "note"]  # fmt: skip
    if finals_frame.empty:
        return pd.DataFrame(columns=cols)
    g = finals_frame.groupby(["family", "depth"], sort=False)
    agg = g.agg(
        label=("label", "first"),
        params=("params", "first"),
        n=("run", "size"),
        train_mean=("train_err", "mean"),
        train_std=("train_err", "std"),
        train_min=("train_err", "min"),
        train_max=("train_err", "max"),
        test_mean=("test_err", "mean"),
        test_std=("test_err", "std"),
        test_min=("test_err", "min"),
        test_max=("test_err", "max"),
        seeds=("seed", lambda s: ",".join(str(v) for v in sorted(s))),
        n_unfinished=("note", lambda s: int((s != "").sum())),
    ).reset_index()
    notes = model_notes(table if table is not None else finals_frame)
    agg["note"] = [notes.get((f, d), "") for f, d in zip(agg["family"], agg["depth"])]
    return sort_models(agg, extra=())[cols].reset_index(drop=True)


# ---------------------------------------------------------------------------
# layer statistics
# ---------------------------------------------------------------------------


@dataclass
class LayerData:
    """The layer statistics of the runs that have them, and why the others have none."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # run key -> rows
    missing: dict[str, str] = field(default_factory=dict)  # run key -> reason

    def __bool__(self) -> bool:
        return bool(self.frames)


def read_layer_stats(run: R.Run, stats=REPORT_STATS) -> pd.DataFrame | None:
    """Rows of layers.parquet for `stats` only; None when the run recorded none.

    Reads through a Parquet row filter with layer/kind/stat as dictionaries
    (categoricals), so a paper-scale file costs a fraction of a full read.
    """
    path = run.path / R.LAYERS
    if not path.exists():
        return None
    try:
        names = set(pq.read_schema(path).names)
        missing = {"step", "layer", "stat", "value"} - names
        if missing:
            raise RunDirError(f"{path} lacks the column(s) {', '.join(sorted(missing))}")
        columns = [c for c in R.LAYER_COLUMNS if c in names]
        dictionary = [c for c in ("layer", "kind", "stat") if c in names]
        table = pq.read_table(path, columns=columns, filters=[("stat", "in", list(stats))], read_dictionary=dictionary)
        frame = table.to_pandas()
    except RunDirError:
        raise
    except Exception as e:  # pyarrow raises several unrelated types for damaged files
        raise RunDirError(f"{path} cannot be read as Parquet ({type(e).__name__}: {e}); the file is damaged") from e
    for c in ("layer", "kind", "stat"):
        if c in frame and not isinstance(frame[c].dtype, pd.CategoricalDtype):
            frame[c] = frame[c].astype("category")
    return frame if len(frame) else None


def load_layer_data(runs: list[R.Run], stats=REPORT_STATS) -> LayerData:
    data = LayerData()
    for run in runs:
        key = run_key(run)
        try:
            frame = read_layer_stats(run, stats)
        except RunDirError as e:
            data.missing[key] = str(e)
            continue
        if frame is None:
            data.missing[key] = (
                "no layers.parquet (layer recording was off)"
                if not (run.path / R.LAYERS).exists()
                else "layers.parquet holds none of the statistics the report draws"
            )
        else:
            data.frames[key] = frame
    return data


@dataclass(frozen=True)
class LayerMap:
    """Positions along depth of the probe points and parameters of one model.

    weight_pos: parameter/point name -> 1-based position among main-path weighted
                layers (conv and fc weights; shortcut projections excluded).
    bn_pos:     BN point name -> 1-based position among main-path BN layers.
    """

    weight_pos: dict[str, int]
    conv_point_pos: dict[str, int]
    bn_pos: dict[str, int]
    kinds: dict[int, str]  # weighted position -> "conv" | "fc"


def layer_map(run: R.Run, frame: pd.DataFrame | None = None) -> LayerMap:
    """Built from the probe points in spec.json; from the rows' own kind/index if absent
    (then shortcut projections cannot be told apart and count as main path)."""
    points = run.model.get("probe_points") or []
    if points:
        pts = sorted(
            (
                (int(p.get("index", i)), p.get("name"), p.get("kind"), p.get("role", MAIN) or MAIN)
                for i, p in enumerate(points)
            ),
            key=lambda t: t[0],
        )
    elif frame is not None and "kind" in frame and "index" in frame:
        # no probe points written: take every conv/fc weight and bn point as main path
        owners = frame[["layer", "index", "kind"]].drop_duplicates("layer")
        pts = []
        for layer, index, kind in zip(owners["layer"].astype(str), owners["index"], owners["kind"].astype(str)):
            if layer.endswith(".bias"):
                continue
            name = layer[: -len(".weight")] if layer.endswith(".weight") else layer
            pts.append((int(index), name, kind, MAIN))
        pts = sorted(set(pts))  # a module's weight row and output row name the same point
    else:
        pts = []
    weighted = [(name, kind) for _, name, kind, role in pts if kind in WEIGHTED_KINDS and role == MAIN]
    bns = [name for _, name, kind, role in pts if kind == "bn" and role == MAIN]
    return LayerMap(
        weight_pos={f"{n}.weight": i + 1 for i, (n, _) in enumerate(weighted)},
        conv_point_pos={n: i + 1 for i, (n, k) in enumerate(weighted) if k == "conv"},
        bn_pos={n: i + 1 for i, n in enumerate(bns)},
        kinds={i + 1: k for i, (_, k) in enumerate(weighted)},
    )


def _select(frame: pd.DataFrame, stat: str, positions: dict[str, int]) -> pd.DataFrame:
    """Rows of `stat` whose layer is in `positions`, with a `position` column (vectorized)."""
    rows = frame[frame["stat"] == stat]
    if rows.empty:
        return rows.assign(position=pd.Series(dtype=np.int64))
    layer = rows["layer"]
    cats = layer.cat.categories
    pos_by_code = np.array([positions.get(str(c), 0) for c in cats], dtype=np.int64)
    pos = pos_by_code[layer.cat.codes.to_numpy()]
    keep = pos > 0
    out = rows.loc[keep, ["step", "layer", "value"]].copy()
    out["layer"] = out["layer"].astype(str)
    out["position"] = pos[keep]
    return out


def weight_grad_rows(run: R.Run, frame: pd.DataFrame) -> pd.DataFrame:
    """||dL/dW|| of main-path conv/fc weights: step, layer, value, position."""
    return _select(frame, S.GRAD_NORM, layer_map(run, frame).weight_pos)


def act_grad_rows(run: R.Run, frame: pd.DataFrame) -> pd.DataFrame:
    """||dL/dh|| at main-path conv outputs (BN outputs if no conv rows), by weighted position."""
    lm = layer_map(run, frame)
    rows = _select(frame, S.ACT_GRAD_NORM, lm.conv_point_pos)
    if rows.empty:
        rows = _select(frame, S.ACT_GRAD_NORM, lm.bn_pos)
    return rows


def response_rows(run: R.Run, frame: pd.DataFrame) -> pd.DataFrame:
    """Layer responses (act_std at main-path BN outputs), by BN position."""
    return _select(frame, S.ACT_STD, layer_map(run, frame).bn_pos)


def phase_steps(steps, total: int) -> dict[str, int]:
    """init = first recorded step, end = last, early = the recorded step nearest 5 % of training.

    `early` is left out when no recorded step lies strictly between init and end.
    """
    steps = np.unique(np.asarray(steps, dtype=np.int64))
    if steps.size == 0:
        return {}
    out = {"init": int(steps[0]), "end": int(steps[-1])}
    inner = steps[1:-1]
    if inner.size:
        target = EARLY_FRACTION * (total if total > 0 else steps[-1])
        out["early"] = int(inner[np.argmin(np.abs(inner - target))])
    return {p: out[p] for p in PHASES if p in out}


def _identity(run: R.Run) -> dict:
    return {
        "run": run_key(run),
        "family": run.family,
        "depth": run.depth,
        "seed": run_seed(run),
        "label": fam.label(run.family, run.depth),
    }


def gradient_flow(runs: list[R.Run], data: LayerData) -> pd.DataFrame:
    """Per-layer gradient norms at init, early and end of every run with layer data.

    stat "grad_norm": ||dL/dW|| of each main-path conv/fc weight;
    stat "act_grad_norm": ||dL/dh|| at each main-path conv output.
    position: 1 = the first layer (input side) ... n = the classifier; kind: conv | fc.
    """
    cols = ["run", "family", "depth", "seed", "label", "phase", "step", "stat", "position", "kind", "layer", "value"]
    parts = []
    for run in runs:
        frame = data.frames.get(run_key(run))
        if frame is None:
            continue
        kinds = layer_map(run, frame).kinds
        for stat, rows in ((S.GRAD_NORM, weight_grad_rows(run, frame)), (S.ACT_GRAD_NORM, act_grad_rows(run, frame))):
            if rows.empty:
                continue
            steps = phase_steps(rows["step"].unique(), total_steps(run))
            for phase, step in steps.items():
                part = rows[rows["step"] == step].sort_values("position")
                part = part.assign(phase=phase, stat=stat, kind=part["position"].map(kinds), **_identity(run))
                parts.append(part)
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]


def gradient_heatmap(run: R.Run, frame: pd.DataFrame) -> pd.DataFrame:
    """||dL/dW|| as a (position × step) array: rows = layers from the input, columns = steps."""
    rows = weight_grad_rows(run, frame)
    if rows.empty:
        return pd.DataFrame()
    return rows.pivot_table(index="position", columns="step", values="value", aggfunc="mean", sort=True)


def responses(runs: list[R.Run], data: LayerData) -> pd.DataFrame:
    """Fig. 7: std of each BN output (before the ReLU) at the last recorded step with finite values.

    rank: 1 = the largest response of that run (the paper's sorted view).
    """
    cols = ["run", "family", "depth", "seed", "label", "step", "position", "layer", "value", "rank"]
    parts = []
    for run in runs:
        frame = data.frames.get(run_key(run))
        if frame is None:
            continue
        rows = response_rows(run, frame)
        rows = rows[np.isfinite(rows["value"].to_numpy(dtype=float))]  # a diverged run: its last finite record
        if rows.empty:
            continue
        last = rows["step"].max()
        part = rows[rows["step"] == last].sort_values("position")
        rank = part["value"].rank(ascending=False, method="first").astype(np.int64)
        parts.append(part.assign(rank=rank, **_identity(run)))
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]


def flow_by_model(flow: pd.DataFrame) -> pd.DataFrame:
    """Gradient flow averaged over seeds (geometric mean) per (family, depth, phase, stat, position)."""
    if flow.empty:
        return flow.assign(n=pd.Series(dtype=np.int64))
    f = flow.assign(logv=positive_logs(flow["value"]))
    keys = ["family", "depth", "label", "phase", "stat", "position", "kind"]
    g = f.groupby(keys, sort=True, dropna=False)
    out = g.agg(logv=("logv", "mean"), step=("step", "max"), n=("run", "nunique")).reset_index()
    out["value"] = np.exp(out.pop("logv"))
    return out


def phase_step_label(flow: pd.DataFrame, phase: str) -> str:
    """Which step a phase shows: "step 0", or "steps 3200–3400" when runs differ."""
    steps = sorted(flow.loc[flow["phase"] == phase, "step"].unique())
    if not steps:
        return ""
    if len(steps) == 1:
        return f"step {steps[0]:,}"
    return f"steps {steps[0]:,}–{steps[-1]:,}"
