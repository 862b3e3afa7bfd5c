"""The pathology suite's cases (gradlab.bench.pathology_cases): each run directory, read back
alone, really holds its pathology at the layer and step its case names, and the healthy runs
are healthy. Facts of the recorded data only: no findings rule is used here."""

import math

import numpy as np
import pandas as pd
import pytest

from gradlab import runs
from gradlab.bench.pathology_cases import CASES, RULES, case, train_all


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every case trained once: {case name: the run read back from its directory}."""
    dirs = train_all(tmp_path_factory.mktemp("pathology"))
    return {name: runs.read_run(path) for name, path in dirs.items()}


def stat(run, name: str, layer: str) -> pd.Series:
    """One statistic of one layer, by step."""
    layers = run.layers
    rows = layers[(layers["stat"] == name) & (layers["layer"] == layer)]
    assert len(rows), f"no {name} of {layer} in {run.path}"
    return rows.set_index("step")["value"].sort_index()


def unexplained_nonfinite(run) -> pd.DataFrame:
    """The rows of layers.parquet that are not finite, less the NaNs every run has: update_norm
    at the first recorded step (no previous weights) and grad_weight_ratio where ‖w‖ = 0."""
    layers = run.layers
    bad = layers[~np.isfinite(layers["value"])]
    weights = layers[layers["stat"] == "weight_norm"].set_index(["step", "layer"])["value"]
    first = bad["stat"].eq("update_norm") & bad["step"].eq(layers["step"].min()) & bad["value"].isna()
    ratio = bad["stat"].eq("grad_weight_ratio") & bad["value"].isna()
    zero_weight = ratio & pd.Series([weights.get(key) == 0 for key in zip(bad["step"], bad["layer"])],
                                    index=bad.index, dtype=bool)  # fmt: skip
    return bad[~(first | zero_weight)]


def losses(run) -> pd.Series:
    return run.metrics.set_index("step")["train_loss"].dropna().sort_index()


# ---------------------------------------------------------------------------- the list itself


def test_cases_are_well_formed():
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names)
    for c in CASES:
        assert c.kind in ("pathology", "healthy") and c.description and callable(c.train)
        assert (c.rule is None) == (c.kind == "healthy") and (c.rule is None or c.rule in RULES)
        assert set(c.also) <= set(RULES)
    assert {c.rule for c in CASES if c.rule} >= set(RULES) - {"update_ratio"}
    assert "update_ratio" in case("lr_too_high").also
    assert sum(c.kind == "healthy" for c in CASES) >= 4
    with pytest.raises(KeyError, match="zero_gate"):
        case("nope")


def test_train_all_trains_the_cases_named_into_folders_named_after_them(tmp_path):
    dirs = train_all(tmp_path, ["zero_gate", "frozen_layer"])
    assert list(dirs) == ["zero_gate", "frozen_layer"]
    for name, path in dirs.items():
        assert path == tmp_path / name and runs.read_run(path).state == runs.DONE
    assert len(losses(runs.read_run(dirs["zero_gate"]))) == 40  # the loss of every step


# ---------------------------------------------------------------------------- pathologies


@pytest.mark.slow
def test_sigmoid_net_gradient_vanishes_towards_the_input(trained):
    run = trained["sigmoid_deep"]
    first, last = stat(run, "grad_norm", "fc0.weight"), stat(run, "grad_norm", "fc19.weight")
    assert len(first) == 30 and (first < 1e-3 * last).all()
    along = [stat(run, "act_grad_norm", f"fc{k}").loc[0] for k in range(20)]
    assert all(a < b for a, b in zip(along, along[1:]))  # shrinking at every layer, output to input
    assert abs(losses(run).iloc[-1] - math.log(10)) < 0.2  # it does not learn


@pytest.mark.slow
def test_dead_layer_is_dead_at_every_step_and_only_there(trained):
    run, c = trained["dead_relu"], case("dead_relu")
    assert (stat(run, "act_dead_frac", c.layer) >= 0.9).all() and stat(run, "act_dead_frac", c.layer).loc[c.step] == 1
    for p in ("weight", "bias"):
        assert (stat(run, "grad_norm", f"{c.layer}.{p}") == 0).all()  # no gradient through a dead ReLU
    for k in (0, 2, 3):
        assert (stat(run, "act_dead_frac", f"blocks.{k}.branch.fc1") < 0.5).all()
    assert losses(run).iloc[-1] < 0.5 * losses(run).iloc[0]  # the residual stream learns around it


@pytest.mark.slow
def test_too_high_lr_explodes_then_goes_nonfinite(trained):
    run = trained["lr_too_high"]
    assert run.state == runs.DIVERGED
    onset = run.status["nonfinite"]["step"]
    layers = run.layers
    grads = layers[layers["stat"] == "grad_norm"].groupby("step")["value"].max()
    before = grads.loc[: onset - 1]
    assert np.isfinite(before).all() and before.iloc[-1] > 1e6 * before.iloc[0]
    assert not np.isfinite(layers[layers["step"] >= onset]["value"]).all()
    weights = layers[layers["stat"] == "weight_norm"].set_index(["step", "layer"])["value"]
    updates = layers[layers["stat"] == "update_norm"].set_index(["step", "layer"])["value"]
    ratio = (updates / weights).groupby("step").max().loc[1 : onset - 1]
    assert (ratio > 0.5).all() and ratio.max() > 1  # updates as large as the weights
    loss = run.metrics.set_index("step")["train_loss"]
    assert loss.loc[onset - 1] > 1e4 * loss.loc[0] and not np.isfinite(loss.loc[onset + 1 :]).any()


@pytest.mark.slow
def test_nan_onset_is_exactly_the_named_weight_at_the_named_step(trained):
    run, c = trained["nan_weight"], case("nan_weight")
    layers = run.layers
    bad = unexplained_nonfinite(run)
    assert bad["step"].min() == c.step
    at = bad[bad["step"] == c.step]
    assert set(at[at["stat"] == "weight_norm"]["layer"]) == {c.layer}
    upstream = layers[(layers["step"] == c.step) & layers["layer"].isin(["fc0", "fc1", "fc0.weight", "fc1.weight"])
                      & layers["stat"].isin(["act_mean", "weight_norm"])]  # fmt: skip
    assert len(upstream) == 4 and np.isfinite(upstream["value"]).all()
    assert run.status["nonfinite"] == {"step": c.step, "layer": c.layer, "what": "weight"}
    assert run.state == runs.DIVERGED
    loss = run.metrics.set_index("step")["train_loss"]
    assert np.isfinite(loss.loc[: c.step - 1]).all() and np.isnan(loss.loc[c.step])


@pytest.mark.slow
def test_loss_spikes_at_the_named_step_only(trained):
    run, c = trained["loss_spike"], case("loss_spike")
    loss = losses(run)
    assert np.isfinite(loss).all() and run.state == runs.DONE
    previous10 = loss.rolling(10).mean().shift(1)
    spikes = loss[loss > 10 * previous10]
    assert list(spikes.index) == [c.step]
    assert loss.loc[c.step + 1] < 2 * previous10.loc[c.step]  # one step: the run goes on afterwards


@pytest.mark.slow
def test_frozen_layer_gets_a_gradient_but_never_moves(trained):
    run, c = trained["frozen_layer"], case("frozen_layer")
    update, grad = stat(run, "update_norm", c.layer), stat(run, "grad_norm", c.layer)
    assert np.isnan(update.loc[0]) and (update.loc[1:] == 0).all() and len(update) == 40
    assert (grad > 0).all()
    assert stat(run, "weight_norm", c.layer).nunique() == 1
    for other in ("fc0.weight", "fc1.bias", "fc2.weight"):
        assert (stat(run, "update_norm", other).loc[1:] > 0).all()
    assert losses(run).iloc[-1] < losses(run).iloc[0] - 0.2


@pytest.mark.slow
def test_zero_gate_zeroes_its_branch_gradient_at_step_0_only(trained):
    run, c = trained["zero_gate"], case("zero_gate")
    layers = run.layers
    grads = layers[layers["stat"] == "grad_norm"]
    branch = grads[grads["layer"].str.startswith(c.layer + ".")]
    assert branch["layer"].nunique() == 4
    assert (branch[branch["step"] == c.step]["value"] == 0).all()
    assert (branch[branch["step"] > c.step]["value"] > 0).all()  # alpha moved: the branch learns
    assert stat(run, "grad_norm", "blocks.1.alpha").loc[0] > 0
    others = grads[(grads["step"] == 0) & grads["layer"].str.match(r"blocks\.[023]\.branch\.")]
    assert len(others) == 12 and (others["value"] > 0).all()


# ---------------------------------------------------------------------------- healthy


@pytest.mark.slow
@pytest.mark.parametrize("name", [c.name for c in CASES if c.kind == "healthy"])
def test_healthy_runs_learn_with_finite_statistics(trained, name):
    run = trained[name]
    assert run.state == runs.DONE and "nonfinite" not in run.status
    loss = losses(run)
    assert len(loss) >= 8 and np.isfinite(loss).all() and loss.iloc[-1] < loss.iloc[0]
    assert len(run.layers) and unexplained_nonfinite(run).empty
