"""Hand-made run directories with known values, for report tests and benchmarks.

Everything here writes through the run directory's one writer (gradlab.run_writer) and
never imports torch. `make_run` synthesizes a CIFAR-style plain or residual run of
any depth 6n+2 with the probe layout the models describe:

    conv1, bn1, layer{s}.{i}.conv1/bn1/conv2/bn2/branch_out, [.shortcut.0/.1], layer{s}.{i}, fc

(the layout of gradlab.models.cifar, written out by hand so that no torch is needed)

Values are deterministic functions of (family, position, step, seed) so tests can
compare what the report computed with what was written; pass explicit finals to pin
the numbers a test checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gradlab import runs as R
from gradlab import stat_names as S
from gradlab.families import PLAIN, RESNET
from gradlab.file_io import write_json
from gradlab.run_writer import RunWriter
from gradlab.models.probe_points import BLOCK, BN, BRANCH, CONV, FC, ProbePoint

DEAD_PID = 99_999_999  # above any pid_max: os.kill says "no such process"


# ---------------------------------------------------------------------------
# model description
# ---------------------------------------------------------------------------


def cifar_probe_points(depth: int, family: str = RESNET, shortcut: str = "A") -> list[ProbePoint]:
    """Probe points of a CIFAR ResNet/plain net of depth 6n+2, in depth order."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR nets have depth 6n+2, got {depth}")
    n = (depth - 2) // 6
    residual = family == RESNET
    pts: list[ProbePoint] = []

    def add(name, kind, block=None, role="main", relu_after=False, relu_output=False):
        pts.append(ProbePoint(name, len(pts), kind, block, role, relu_after, relu_output))

    add("conv1", CONV)
    add("bn1", BN, relu_after=True)
    for stage in (1, 2, 3):
        for i in range(n):
            blk = f"layer{stage}.{i}"
            add(f"{blk}.conv1", CONV, blk)
            add(f"{blk}.bn1", BN, blk, relu_after=True)
            add(f"{blk}.conv2", CONV, blk)
            add(f"{blk}.bn2", BN, blk, relu_after=not residual)
            add(f"{blk}.branch_out", BRANCH, blk, relu_after=not residual)
            if residual and shortcut in ("B", "C") and stage > 1 and i == 0:
                add(f"{blk}.shortcut.0", CONV, blk, role="shortcut")
                add(f"{blk}.shortcut.1", BN, blk, role="shortcut")
            add(blk, BLOCK, blk, relu_output=True)
    add("fc", FC)
    return pts


def _param_shapes(
    points: list[ProbePoint], in_channels: int = 3, classes: int = 10
) -> list[tuple[str, ProbePoint, int]]:
    """(parameter name, owner, size) for every parameter of the net."""
    out = []
    channels = {1: 16, 2: 32, 3: 64}
    prev = in_channels
    for p in points:
        stage = int(p.block[5]) if p.block else 1
        c = channels[stage] if p.name != "conv1" else 16
        if p.kind == CONV:
            if p.name == "conv1":
                cin = in_channels
            elif p.role == "shortcut":
                cin = channels[stage - 1]
            else:
                cin = prev
            out.append((f"{p.name}.weight", p, cin * c * 9 if p.role == "main" else cin * c))
            if p.role == "main":
                prev = c
        elif p.kind == BN:
            out.append((f"{p.name}.weight", p, c))
            out.append((f"{p.name}.bias", p, c))
        elif p.kind == FC:
            out.append((f"{p.name}.weight", p, 64 * classes))
            out.append((f"{p.name}.bias", p, classes))
    return out


def model_dict(depth: int, family: str = RESNET, shortcut: str = "A") -> dict:
    points = cifar_probe_points(depth, family, shortcut)
    params = sum(size for _, _, size in _param_shapes(points))
    name = f"{'resnet' if family == 'resnet' else 'plain'}{depth}"
    return {
        "name": name,
        "arch": "cifar",
        "family": family,
        "depth": depth,
        "blocks": 3 * ((depth - 2) // 6),
        "params": int(params),
        "shortcut": shortcut,
        "probe_points": [p.to_dict() for p in points],
    }


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------


def default_finals(family: str, depth: int) -> tuple[float, float]:
    """(train_err, test_err) with degradation in plain nets and none in ResNets."""
    if family == PLAIN:
        train = 0.02 + 0.0008 * depth
    else:
        train = 0.03 - 0.0001 * depth
    return round(train, 6), round(train + 0.05, 6)


def make_metrics(
    steps: int,
    final_train_err: float,
    final_test_err: float,
    eval_every: int | None = None,
    seed: int = 0,
    upto: int | None = None,
) -> pd.DataFrame:
    """One row per evaluation; the last row holds exactly the given final errors."""
    eval_every = eval_every or max(1, steps // 20)
    last = steps if upto is None else upto
    s = np.arange(eval_every, last + 1, eval_every)
    if s.size == 0 or s[-1] != last:
        s = np.append(s, last)
    rng = np.random.default_rng(seed)
    tau = steps / 6
    decay = np.exp(-s / tau)
    noise = 1 + 0.03 * rng.standard_normal(s.size)
    train = final_train_err + (0.9 - final_train_err) * decay * noise
    test = final_test_err + (0.9 - final_test_err) * decay * noise
    train[-1], test[-1] = final_train_err, final_test_err
    return pd.DataFrame(
        {
            "step": s.astype(np.int64),
            "epoch": s / max(1, steps // 10),
            "lr": np.where(s < steps // 2, 0.1, 0.01),
            "train_loss": train * 2.5,
            "train_err": np.clip(train, 0, 1),
            "test_err": np.clip(test, 0, 1),
            "val_err": np.nan,
            "images_per_s": 5000.0,
            "time_s": s * 0.01,
        }
    )


# ---------------------------------------------------------------------------
# layer statistics
# ---------------------------------------------------------------------------


def record_steps(steps: int, n: int = 40) -> np.ndarray:
    """Recorded steps: step 0, a denser first 10 %, then evenly to the end."""
    early = np.linspace(0, 0.1 * steps, max(2, n // 4))
    rest = np.linspace(0, steps, max(2, n - n // 4))
    return np.unique(np.round(np.concatenate([early, rest])).astype(np.int64))


def grad_norm_value(family: str, position: np.ndarray, n_layers: int, step: np.ndarray, steps: int) -> np.ndarray:
    """Synthetic ||dL/dW||: plain nets lose gradient towards the input, ResNets barely do."""
    decay = 0.93 if family == PLAIN else 0.995
    return decay ** (n_layers - position) * (0.2 + np.exp(-step / max(1, steps / 5)))


def make_layers(
    model: dict,
    steps: int,
    n_records: int = 40,
    seed: int = 0,
    stats=S.DEFAULT_STATS,
    upto: int | None = None,
) -> pd.DataFrame:
    """A layers.parquet frame for `model` (from model_dict), vectorized over steps."""
    family = model["family"]
    points = [ProbePoint.from_dict(p) for p in model["probe_points"]]
    rec = record_steps(steps, n_records)
    if upto is not None:
        rec = rec[rec <= upto]
    main_weighted = [p for p in points if p.kind in (CONV, FC) and p.role == "main"]
    pos = {p.name: i + 1 for i, p in enumerate(main_weighted)}
    n_layers = len(main_weighted)
    bn_main = [p for p in points if p.kind == BN and p.role == "main"]
    bn_pos = {p.name: i + 1 for i, p in enumerate(bn_main)}

    names, index, kind, stat, position, base = [], [], [], [], [], []

    def row(layer, owner, st, p, b):
        names.append(layer)
        index.append(owner.index)
        kind.append(owner.kind)
        stat.append(st)
        position.append(p)
        base.append(b)

    for pname, owner, _ in _param_shapes(points):
        p = pos.get(owner.name, 0)
        for st in S.PARAM_STATS:
            if st in stats:  # an update a thousandth of its weight between records, as healthy nets move
                row(pname, owner, st, p, 1e-3 if st == S.UPDATE_NORM else 1.0 + 0.01 * owner.index)
    for owner in points:
        if owner.kind == BLOCK:
            if S.BRANCH_RATIO in stats and family == RESNET:
                row(owner.name, owner, S.BRANCH_RATIO, 0, 0.3 + 0.001 * owner.index)
            continue
        for st in S.OUTPUT_STATS:
            if st not in stats or (st == S.ACT_ZERO_FRAC and not owner.next_to_relu):
                continue  # the recorder counts zeros only next to a ReLU
            if st == S.ACT_STD and owner.kind == BN and owner.role == "main":
                # Fig. 7: ResNet responses are smaller than plain ones
                b = (1.0 if family == PLAIN else 0.5) * (1 + 0.3 * np.sin(bn_pos[owner.name]))
            else:
                b = 0.5 + 0.001 * owner.index
            row(owner.name, owner, st, pos.get(owner.name, 0), b)

    names = np.array(names, dtype=object)
    template = pd.DataFrame(
        {"layer": names, "index": index, "kind": kind, "stat": stat, "position": position, "base": base}
    )
    n_rows, n_steps = len(template), len(rec)
    step = np.repeat(rec, n_rows)
    tile = np.tile(np.arange(n_rows), n_steps)
    t = template.iloc[tile].reset_index(drop=True)
    value = t["base"].to_numpy(dtype=float).copy()
    is_grad = (t["stat"] == S.GRAD_NORM).to_numpy() & (t["position"] > 0).to_numpy()
    value[is_grad] = grad_norm_value(family, t["position"].to_numpy()[is_grad], n_layers, step[is_grad], steps)
    is_agrad = (t["stat"] == S.ACT_GRAD_NORM).to_numpy() & (t["position"] > 0).to_numpy()
    value[is_agrad] = 3.0 * grad_norm_value(family, t["position"].to_numpy()[is_agrad], n_layers, step[is_agrad], steps)
    rng = np.random.default_rng(1000 + seed)
    value *= 1 + 0.01 * rng.standard_normal(value.size)
    # layer responses shrink a little during training; step 0 keeps its base
    return pd.DataFrame(
        {
            "step": step.astype(np.int64),
            "layer": t["layer"].to_numpy(),
            "index": t["index"].to_numpy(dtype=np.int64),
            "kind": t["kind"].to_numpy(),
            "stat": t["stat"].to_numpy(),
            "value": value,
        }
    )


# ---------------------------------------------------------------------------
# run directories
# ---------------------------------------------------------------------------


def make_run(
    root: Path,
    family: str = RESNET,
    depth: int = 20,
    seed: int = 0,
    steps: int = 400,
    *,
    experiment: str = "degradation-test",
    final_train_err: float | None = None,
    final_test_err: float | None = None,
    state: str = R.DONE,
    upto: int | None = None,
    pid: int | None = None,
    layers: bool = True,
    n_records: int = 40,
    eval_every: int | None = None,
    stats=S.DEFAULT_STATS,
    shortcut: str = "A",
    nonfinite: dict | None = None,
    name: str | None = None,
) -> Path:
    """Write one run directory under root/<experiment>/<name>; return its path.

    upto: last step reached (defaults to `steps`; a running/crashed/diverged run stops
    earlier). pid: for state "running", os.getpid() reads as alive and DEAD_PID as crashed.
    """
    model = model_dict(depth, family, shortcut)
    name = name or f"{model['name']}-s{seed}"
    run_dir = Path(root) / experiment / name
    if final_train_err is None or final_test_err is None:
        tr, te = default_finals(family, depth)
        final_train_err = tr if final_train_err is None else final_train_err
        final_test_err = te if final_test_err is None else final_test_err
    last = steps if upto is None else upto
    spec = {  # what the trainer adds to spec.json (gradlab.train.run_fields), in short
        "experiment": experiment,  # (as given: it may name nested folders)
        "seed": seed,
        "data": {"name": "digits", "train_size": 1437, "test_size": 360},
        "recipe": {"steps": steps, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
        "env": {"gradlab": "0.1.0", "torch": "n/a", "device": "cpu"},
    }
    writer = RunWriter(run_dir, name=name, overwrite=True, source=R.TRAIN_SOURCE, total_steps=steps)
    writer.set_run(model, spec)
    writer.open(model, None, spec["env"])
    for row in make_metrics(steps, final_train_err, final_test_err, eval_every=eval_every, seed=seed,
                            upto=last).to_dict("records"):  # fmt: skip
        writer.log(row)
    if layers:
        writer.add_layers(make_layers(model, steps, n_records, seed=seed, stats=stats, upto=last))
    extra = {}
    if nonfinite is not None:
        extra["nonfinite"] = nonfinite
    elif state == R.DIVERGED:
        extra["nonfinite"] = {"step": last, "layer": "layer3.0.conv2.weight", "what": "grad"}
    writer.close(state, last, f"synthetic {state} run", **extra)
    if pid is not None:
        write_json(run_dir / R.STATUS, {**R.read_status(run_dir), "pid": pid})
    return run_dir
