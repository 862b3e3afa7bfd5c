"""The runs' per-layer statistics, read and shaped for the figures along depth.

layers.parquet of each run is read once (:func:`load_layer_data`), asking Parquet for the
statistics the report draws only (a row filter), with layer names as categoricals. The
probe points and parameters in spec.json give every layer its place along depth
(:func:`layer_map`); the frames then hold, per run, phase (init/early/end) and position:

    gradient_flow  ||dL/dW|| and ||dL/dh|| along depth (He et al. 2015's vanishing or exploding gradients)
    activations    the std of each block's output (zoo nets) or each probe point's (other models)
    responses      the std of each BN output at the end of training (Fig. 7)
    gradient_heatmap  ||dL/dW|| by layer and recorded step, one run
    model_heatmaps    the same per model (family × depth), seeds pooled (geometric mean)

pandas/numpy only, through gradlab.runs; no torch, no model code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gradlab import run_tables
from gradlab import runs as R
from gradlab import stat_names as S
from gradlab.along_depth import positive_logs
from gradlab.errors import RunDirError
from gradlab.report.collect import identity, reached_step, run_key, total_steps
from gradlab.report.layer_numbering import MAIN, LayerMap, layer_name, own_model_map, zoo_map

# the statistics the report draws
REPORT_STATS = (S.GRAD_NORM, S.ACT_GRAD_NORM, S.ACT_STD)
PHASES = ("init", "early", "end")
EARLY_FRACTION = 0.05  # "early" = the recorded step nearest 5 % of training


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
    if not run_tables.exists(path):
        return None
    names = run_tables.schema_names(path)
    missing = {"step", "layer", "stat", "value"} - names
    if missing:
        raise RunDirError(f"{path} lacks the column(s) {', '.join(sorted(missing))}")
    columns = [c for c in R.LAYER_COLUMNS if c in names]
    dictionary = [c for c in ("layer", "kind", "stat") if c in names]
    frame = run_tables.read(path, columns=columns, filters=[("stat", "in", list(stats))], read_dictionary=dictionary)
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
            data.missing[key] = missing_layers_note(run)
        else:
            data.frames[key] = frame
    return data


def missing_layers_note(run) -> str:
    """Why a run has no layer rows to draw: recording was off; or it is on and a live run
    has not flushed yet (rows come at each checkpoint or flush); or none of the drawn stats."""
    if run.has_layers:
        return "layers.parquet holds none of the statistics the report draws"
    if not run.spec.get("recorder"):
        return "no layers.parquet (layer recording was off)"
    if run.state == R.RUNNING:
        return (f"layer recording is on, and nothing is flushed yet (the run is running, at step "
                f"{reached_step(run)}); rows are written at each checkpoint or flush: report again later")
    return f"no layers.parquet: layer recording was on, but the run ended {run.state} before its first flush"


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
    params = run.model.get("parameters")
    if params:  # a run of someone's own model (gradlab.watch): one numbering for all its layers
        return own_model_map(pts, params)
    return zoo_map(pts)


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
    """||dL/dW|| of main-path conv/fc weights: step, layer, value, position. A tied weight's
    rows are named by all its owners ("wte.weight = lm_head.weight"): one tensor, one row."""
    lm = layer_map(run, frame)
    rows = _select(frame, S.GRAD_NORM, lm.weight_pos)
    if lm.shown_as:
        rows["layer"] = rows["layer"].replace(lm.shown_as)
    return rows


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


def _by_phase(run: R.Run, rows: pd.DataFrame):
    """(phase, the rows of its step in depth order) for each phase of ``run`` in ``rows``."""
    for phase, step in phase_steps(rows["step"].unique(), total_steps(run)).items():
        yield phase, rows[rows["step"] == step].sort_values("position")


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
            for phase, part in _by_phase(run, rows):
                parts.append(part.assign(phase=phase, stat=stat, kind=part["position"].map(kinds), **identity(run)))
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]


def activations(runs: list[R.Run], data: LayerData) -> pd.DataFrame:
    """The std of each block output (zoo nets) or each probe point's output (other models)
    along depth, at init, early and at the end of every run with layer data; "stat" holds
    the phase, so that one figure row shows one phase; "kind" the point's (block, norm, fc,
    ...), so that outputs of different kinds are drawn as lines of their own."""
    cols = ["run", "family", "depth", "seed", "label", "phase", "step", "stat", "position", "kind", "layer", "value"]
    parts = []
    for run in runs:
        frame = data.frames.get(run_key(run))
        if frame is None:
            continue
        lm = layer_map(run, frame)
        rows = _select(frame, S.ACT_STD, lm.act_pos)
        if rows.empty:
            continue
        rows = rows.assign(kind=rows["layer"].map(lm.point_kinds).fillna("other"))
        for phase, part in _by_phase(run, rows):
            parts.append(part.assign(phase=phase, stat=phase, **identity(run)))
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]


def gradient_heatmap(run: R.Run, frame: pd.DataFrame) -> pd.DataFrame:
    """||dL/dW|| as a (position × step) array: rows = layers from the input, columns = steps."""
    rows = weight_grad_rows(run, frame)
    if rows.empty:
        return pd.DataFrame()
    return rows.pivot_table(index="position", columns="step", values="value", aggfunc="mean", sort=True)


def model_heatmaps(runs: list[R.Run], data: LayerData) -> dict[tuple[str, int], pd.DataFrame]:
    """||dL/dW|| as a (position × step) frame per model, (family key, depth) -> frame: the
    family key carries the build options, so differently built nets stay apart; the seeds
    are pooled (:func:`pool_seeds`). One panel per model, not one per run and seed, keeps
    a many-seed report to one readable figure."""
    parts: dict[tuple[str, int], list[pd.DataFrame]] = {}
    for run in runs:
        frame = data.frames.get(run_key(run))
        rows = weight_grad_rows(run, frame) if frame is not None else None
        if rows is not None and not rows.empty:
            parts.setdefault((run.family_key, run.depth), []).append(rows[["position", "step", "value", "layer"]])
    return {key: pool_seeds(rows) for key, rows in parts.items()}


def pool_seeds(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The geometric mean over the seeds (``parts``: position, step, value rows) that
    recorded each (position, step), as a (position × step) frame; NaN where a seed's value
    is non-finite (or negative), so that no seed's blow-up hides behind another's value;
    else 0 where a seed's value is exactly 0 (the heatmap colours the two apart)."""
    rows = pd.concat(parts, ignore_index=True)
    v = rows["value"].to_numpy(dtype=float)
    logs = positive_logs(rows["value"])
    pooled = rows.assign(logv=logs, bad=~np.isfinite(v) | (v < 0), zero=v == 0).groupby(["position", "step"], sort=True)
    pooled = pooled.agg(logv=("logv", "mean"), bad=("bad", "any"), zero=("zero", "any"))
    value = pd.Series(np.where(pooled["bad"], np.nan, np.where(pooled["zero"], 0.0, np.exp(pooled["logv"]))),
                      index=pooled.index)  # fmt: skip
    frame = value.unstack("step").sort_index(axis=0).sort_index(axis=1)
    frame.attrs["seeds"] = len(parts)  # how many runs it pools, for the panel's title
    if "layer" in rows:  # position -> layer name, for the axis
        frame.attrs["names"] = dict(zip(rows["position"].astype(int), rows["layer"].astype(str).map(layer_name)))
    return frame


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
        parts.append(part.assign(rank=rank, **identity(run)))
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]


def flow_by_model(flow: pd.DataFrame) -> pd.DataFrame:
    """Gradient flow (or activations) averaged over seeds (geometric mean) per (family,
    depth, phase, stat, position). ``zero``: the value is exactly 0 in every seed (a
    zero-initialized layer or gate blocks the gradient), which a log axis cannot show."""
    if flow.empty:
        return flow.assign(n=pd.Series(dtype=np.int64), zero=pd.Series(dtype=bool))
    f = flow.assign(logv=positive_logs(flow["value"]), zero=flow["value"] == 0)
    keys = [k for k in ("family", "depth", "label", "phase", "stat", "position", "kind", "layer") if k in flow]
    g = f.groupby(keys, sort=True, dropna=False)
    out = g.agg(logv=("logv", "mean"), step=("step", "max"), n=("run", "nunique"), zero=("zero", "all"))
    out = out.reset_index()
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
