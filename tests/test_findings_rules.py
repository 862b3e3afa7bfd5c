"""Each rule on the case it names, where it must speak, and on its healthy twin, where it
must stay silent (hand-made run directories with known values: tests/findings_runs.py)."""

from __future__ import annotations

import numpy as np
import pytest

from gradlab import runs as R
from gradlab import stat_names as S
from gradlab.findings import ERROR, INFO, WARNING, check_runs
from tests.findings_runs import along_depth, write_run


def found(run_dir, rule=None):
    out = check_runs([R.read_run(run_dir)])
    return [f for f in out if rule is None or f.rule == rule]


def healthy(n_steps=30, n_layers=8):
    """Flat gradients, small updates, a falling loss: nothing to say."""
    rng = np.random.default_rng(0)
    grads = along_depth(1.1, n_layers, n_steps) * rng.uniform(0.8, 1.2, (n_steps, n_layers))
    weights = np.full((n_steps, n_layers), 2.0)
    updates = np.full((n_steps, n_layers), 2e-3)
    updates[0] = np.nan  # the first record has no update
    return {S.ACT_GRAD_NORM: grads, S.GRAD_NORM: grads, S.WEIGHT_NORM: weights, S.UPDATE_NORM: updates,
            S.ACT_DEAD_FRAC: np.full((n_steps, n_layers), 0.05)}, np.linspace(2.0, 0.5, n_steps)  # fmt: skip


def test_a_healthy_run_raises_nothing(tmp_path):
    stats, loss = healthy()
    assert found(write_run(tmp_path, "ok", stats, loss)) == []


@pytest.mark.parametrize("per_layer, rule, severity", [(2.0, "vanishing_gradients", WARNING),
                                                       (10.0, "vanishing_gradients", ERROR),
                                                       (0.5, "exploding_gradients", WARNING),
                                                       (0.1, "exploding_gradients", ERROR)])  # fmt: skip
def test_gradients_that_change_along_depth_are_named_with_their_direction(tmp_path, per_layer, rule, severity):
    stats, loss = healthy()
    stats[S.ACT_GRAD_NORM] = along_depth(per_layer, n_steps=30)
    (f,) = found(write_run(tmp_path, "r", stats, loss), rule)
    assert f.severity == severity and (f.first_step, f.last_step) == (0, 29)
    factor = per_layer ** -7 if per_layer > 1 else per_layer**-7
    assert f.extra["factor"] == pytest.approx(max(factor, 1 / factor), rel=1e-6)
    end = ["l0", "l1", "l2"]  # the input end, where the gradient is smallest (vanishing) or largest (exploding)
    assert [p.layer for p in f.where] == end and f.figure == "gradient_flow"
    other = "exploding_gradients" if rule == "vanishing_gradients" else "vanishing_gradients"
    assert found(tmp_path / "r", other) == []


def test_one_layer_out_of_line_is_no_trend(tmp_path):
    """A query projection that starts tiny, or a head against an embedding: one layer 1e5x
    off a flat line moves a first-to-last ratio, not a robust trend."""
    stats, loss = healthy()
    stats[S.ACT_GRAD_NORM] = stats[S.ACT_GRAD_NORM].copy()
    stats[S.ACT_GRAD_NORM][:, 0] *= 1e-5
    stats[S.GRAD_NORM] = stats[S.ACT_GRAD_NORM]
    assert found(write_run(tmp_path, "r", stats, loss)) == []


def test_the_growth_of_healthy_bn_resnets_stays_below_the_line(tmp_path):
    stats, loss = healthy()
    stats[S.ACT_GRAD_NORM] = along_depth(0.72, n_steps=30)  # 10x over 8 layers, ResNet-110 at init
    assert found(write_run(tmp_path, "r", stats, loss), "exploding_gradients") == []


def test_the_first_non_finite_value_is_named_where_the_recorder_saw_it(tmp_path):
    stats, loss = healthy()
    stats[S.WEIGHT_NORM] = stats[S.WEIGHT_NORM].copy()
    stats[S.WEIGHT_NORM][12:, 3] = np.nan  # l3's weights at step 12, everything after follows
    stats[S.ACT_GRAD_NORM] = stats[S.ACT_GRAD_NORM].copy()
    stats[S.ACT_GRAD_NORM][12:, :] = np.nan
    loss = loss.copy()
    loss[13:] = np.inf
    (f,) = found(write_run(tmp_path, "r", stats, loss), "nonfinite_onset")
    assert (f.severity, f.first_step, [p.layer for p in f.where]) == (ERROR, 12, ["l3.weight"])
    assert "the loss was first non-finite at step 13" in f.evidence
    told = write_run(tmp_path, "s", *healthy(), status={"nonfinite": {"step": 7, "layer": "l5", "what": "grad"}})
    (f,) = found(told, "nonfinite_onset")  # status.json's sighting (from the raw values) comes first
    assert (f.first_step, f.where[0].layer, f.summary) == (7, "l5", "first non-finite grad in l5 at step 7")


def test_zero_gradients_at_init_are_info_and_a_warning_when_they_persist_or_appear(tmp_path):
    stats, loss = healthy(n_steps=80)
    grads = stats[S.GRAD_NORM].copy()
    grads[0, 5:] = 0.0  # a zero-initialized gate: opens at step 1
    grads[:, 2] = 0.0  # never opens
    grads[60:, 6] = 0.0  # dies later
    stats[S.GRAD_NORM] = grads
    out = {(f.severity, f.summary): f for f in found(write_run(tmp_path, "r", stats, loss), "zero_gradients")}
    assert set(out) == {(WARNING, "||dL/dW|| is exactly 0 in 1 layer from step 0 on"),
                        (INFO, "||dL/dW|| is exactly 0 in 3 layers at step 0"),
                        (WARNING, "||dL/dW|| became exactly 0 in 1 layer at step 60")}  # fmt: skip
    assert [p.layer for p in out[(INFO, "||dL/dW|| is exactly 0 in 3 layers at step 0")].where] == [
        "l5.weight", "l6.weight", "l7.weight"]


def test_dead_units_are_named_from_half_the_units_and_an_error_from_nine_in_ten(tmp_path):
    stats, loss = healthy()
    dead = stats[S.ACT_DEAD_FRAC].copy()
    dead[10:, 4] = 0.95
    dead[20:, 5] = 0.6
    stats[S.ACT_DEAD_FRAC] = dead
    (f,) = found(write_run(tmp_path, "r", stats, loss), "dead_units")
    assert (f.severity, f.first_step, [p.layer for p in f.where]) == (ERROR, 10, ["l4", "l5"])
    stats[S.ACT_DEAD_FRAC] = np.full_like(dead, 0.45)
    assert found(write_run(tmp_path, "s", stats, loss), "dead_units") == []


def test_updates_too_large_and_layers_that_do_not_move(tmp_path):
    stats, loss = healthy()
    updates = stats[S.UPDATE_NORM].copy()
    updates[15:, 1] = 30.0  # 15x a weight of norm 2 per step
    updates[1:, 6] = 0.0  # frozen, though its gradient is not zero
    stats[S.UPDATE_NORM] = updates
    run = write_run(tmp_path, "r", stats, loss)
    (big,) = found(run, "update_ratio")
    assert (big.severity, big.first_step, big.where[0].layer) == (ERROR, 15, "l1.weight")
    (still,) = found(run, "not_learning")
    assert (still.severity, [p.layer for p in still.where]) == (WARNING, ["l6.weight"])
    sparse = write_run(tmp_path, "s", healthy()[0], steps=np.arange(30) * 50)  # recorded every 50 steps:
    assert found(sparse, "update_ratio") == [] and found(sparse, "not_learning") == []  # per-step ratio 4e-5


def test_a_loss_spike_is_dated_and_the_layers_that_moved_first_named(tmp_path):
    stats, loss = healthy()
    loss = loss.copy()
    loss[17] *= 1e3
    grads = stats[S.GRAD_NORM].copy()
    grads[17, 2] *= 50
    stats[S.GRAD_NORM] = grads
    (f,) = found(write_run(tmp_path, "r", stats, loss), "loss_spike")
    assert (f.severity, f.first_step, [p.layer for p in f.where]) == (WARNING, 17, ["l2.weight"])
    assert f.summary.startswith("loss spike at step 17: ")


@pytest.mark.parametrize("per_layer, word", [(3.0, "grows"), (1 / 3, "collapses")])
def test_activations_that_grow_or_collapse_along_depth(tmp_path, per_layer, word):
    stats, loss = healthy()
    stats[S.ACT_STD] = along_depth(per_layer, n_steps=30)  # 3^7 = 2,187x over 8 layers
    (f,) = found(write_run(tmp_path, "r", stats, loss), "activation_trend")
    assert f.severity == WARNING and f.summary.startswith(f"the activations' std {word} 2.19e+03x")
    stats[S.ACT_STD] = along_depth(1.2, n_steps=30)  # 3.6x: a BN ResNet's stream
    assert found(write_run(tmp_path, "s", stats, loss), "activation_trend") == []


def test_a_loss_that_does_not_fall_is_named_and_a_short_or_falling_one_is_not(tmp_path):
    stats, _ = healthy()
    flat = np.full(30, 2.30) + np.random.default_rng(0).normal(0, 0.01, 30)
    every10 = np.arange(30) * 10  # 290 steps logged
    (f,) = found(write_run(tmp_path, "flat", stats, flat, steps=every10), "loss_not_decreasing")
    assert f.severity == WARNING and f.summary.startswith("the loss does not decrease: 2.3")
    falls = np.linspace(2.3, 1.5, 30)  # 35 %
    assert found(write_run(tmp_path, "falls", stats, falls, steps=every10), "loss_not_decreasing") == []
    assert found(write_run(tmp_path, "short", stats, flat), "loss_not_decreasing") == []  # 29 steps: too early


def test_degradation_within_a_family_beyond_the_margin_or_the_seed_noise(tmp_path):
    from gradlab.bench.synthetic_runs import make_run

    for depth, err in ((20, 0.04), (56, 0.30), (110, 0.07)):
        make_run(tmp_path / "one", "plain", depth, 0, 60, final_train_err=err)
    out = check_runs(R.load(tmp_path / "one"))
    (f,) = [x for x in out if x.rule == "degradation"]  # 110 is within 5 points of 20 with one seed
    assert f.run == "plain-56" and f.summary.startswith("plain-56 ends with a higher training error") and "one seed each: no noise estimate" in f.evidence
    for seed, (e20, e56) in enumerate(((0.04, 0.05), (0.05, 0.04), (0.04, 0.06))):
        make_run(tmp_path / "seeds", "resnet", 20, seed, 60, final_train_err=e20)
        make_run(tmp_path / "seeds", "resnet", 56, seed, 60, final_train_err=e56)
    assert [x for x in check_runs(R.load(tmp_path / "seeds")) if x.rule == "degradation"] == []  # within the noise


def _sigmoid_run(run_dir, scale):
    import torch
    import torch.nn as nn

    import gradlab

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Sigmoid(), nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 2))
    with torch.no_grad():
        for layer in model[::2]:
            layer.weight.mul_(scale)
    with gradlab.watch(model, run_dir=run_dir, every=1, stats=S.DEFAULT_STATS + (S.ACT_SAT_FRAC,)) as rec:
        for step in range(5):
            model.zero_grad()
            model(torch.randn(16, 8)).pow(2).mean().backward()
            rec.step(step)
    return run_dir


def test_saturated_sigmoids_are_named_where_they_saturate_and_default_inits_are_not(tmp_path):
    (f,) = found(_sigmoid_run(tmp_path / "big", 20.0), "saturation")
    assert f.severity in (WARNING, ERROR) and [p.layer for p in f.where][0] in ("0", "2")
    assert found(_sigmoid_run(tmp_path / "default", 1.0), "saturation") == []


def test_gradients_that_grow_while_the_loss_falls_are_a_branch_opening_not_an_explosion(tmp_path):
    stats, loss = healthy()
    grads = stats[S.GRAD_NORM].copy()
    grads[10:] *= 1e5  # a Fixup branch opening from zero ...
    stats[S.GRAD_NORM] = grads
    assert found(write_run(tmp_path, "opens", stats, loss), "exploding_gradients") == []  # ... while the loss falls
    rising = np.linspace(2.0, 0.5, 30)
    rising[10:] = 50.0
    (f,) = found(write_run(tmp_path, "blows", stats, rising), "exploding_gradients")
    assert f.extra["over"] == "time" and f.first_step == 10 and f.severity == WARNING


def test_a_weight_growing_from_zero_has_no_update_ratio_yet(tmp_path):
    stats, loss = healthy()
    weights = stats[S.WEIGHT_NORM].copy()
    weights[:, 3] = np.linspace(0.0, 2.0, 30)  # a zero-initialized conv (Fixup) growing
    updates = stats[S.UPDATE_NORM].copy()
    updates[1:, 3] = 2.0 / 29
    stats[S.WEIGHT_NORM], stats[S.UPDATE_NORM] = weights, updates
    assert found(write_run(tmp_path, "r", stats, loss), "update_ratio") == []
