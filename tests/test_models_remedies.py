"""The classic failure modes and the later remedies, with known answers at initialization:
Fixup, ReZero and SkipInit blocks start as identity maps, Fixup's scaling is the paper's,
an NF-ResNet's signal propagation follows the analytic variance, a sigmoid plain net's
gradients vanish towards the input, stochastic depth drops what it should (CPU, seconds)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradlab.analyses.init_gradients import init_gradients
from gradlab.analyses.spp import VAR, signal_propagation
from gradlab.config import load_preset, make_run_spec
from gradlab.errors import ModelError
from gradlab.models import build, info
from gradlab.models.remedies import NF_ALPHA, fixup_scale, nf_expected_variances


def blocks_with_inputs(model, x):
    """(block, its input) for every residual block, from one forward of x."""
    seen = []
    handles = [b.register_forward_pre_hook(lambda m, a, seen=seen: seen.append((m, a[0].detach().clone())))
               for _, b in model.residual_blocks()]  # fmt: skip
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("family", ["rezero", "skipinit"])
def test_gated_blocks_are_exact_identity_maps_at_init_for_any_input(family):
    torch.manual_seed(0)
    model = build(f"{family}20").train()
    for _, block in model.residual_blocks():
        c = block.conv1.in_channels
        x = torch.randn(3, c, 8, 8) * 5  # any input: negative values too
        with torch.no_grad():
            expected = block.shortcut(x)
            assert torch.equal(block(x), expected)  # x itself where the shape stays
            if isinstance(block.shortcut, torch.nn.Identity):
                assert torch.equal(block(x), x)


def test_fixup_blocks_start_with_a_zero_branch_and_pass_relu_outputs_through():
    torch.manual_seed(0)
    model = build("fixup20")
    for _, block in model.residual_blocks():
        c = block.conv1.in_channels
        branch = []
        handle = block.branch_out.register_forward_hook(lambda m, a, out: branch.append(out))
        x = torch.randn(2, c, 8, 8) * 3
        with torch.no_grad():
            out = block(x)
        handle.remove()
        assert torch.count_nonzero(branch[0]) == 0  # F(x) = 0 for any input
        assert torch.equal(out, F.relu(block.shortcut(x)))  # relu(shortcut(x)): x for the ReLU outputs it gets
    for block, x in blocks_with_inputs(model, torch.randn(2, 3, 16, 16)):
        if isinstance(block.shortcut, torch.nn.Identity):
            assert torch.equal(block(x), x)


def test_fixup_scaling_follows_the_paper():
    torch.manual_seed(0)
    model = build("fixup110")
    blocks = [b for _, b in model.residual_blocks()]
    L = len(blocks)
    assert fixup_scale(L) == pytest.approx(L ** -0.5)  # L^(-1/(2m-2)) with m = 2
    # He init by fan-out, then scaled: pooled over all blocks, the std must be the formula's
    ratios = []
    for b in blocks:
        w = b.conv1.weight.detach()
        ratios.append(float(w.std()) / (math.sqrt(2 / (w.shape[0] * w.shape[2] * w.shape[3])) * L ** -0.5))
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.02)
    assert all(torch.count_nonzero(b.conv2.weight) == 0 for b in blocks)
    assert torch.count_nonzero(model.fc.weight) == 0 and torch.count_nonzero(model.fc.bias) == 0
    assert all(b.scale.item() == 1 and b.bias1a.item() == b.bias2b.item() == 0 for b in blocks)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_nfresnet_signal_propagation_matches_the_analytic_variance():
    result = signal_propagation(depths=(56,), families=("nfresnet",), seeds=(0, 1), inputs="gaussian",
                                dataset="cifar10", batch_size=64, device="cpu", progress=False)  # fmt: skip
    by_model = result["by_model"]
    measured = by_model[by_model["stat"] == VAR].sort_values("block")["value"].to_numpy()
    expected = np.array(nf_expected_variances(9))  # grows by alpha^2 a block, back to 1 + alpha^2 at transitions
    assert expected[0] == pytest.approx(1 + NF_ALPHA**2) and expected[9] == expected[0]
    np.testing.assert_allclose(measured, expected, rtol=0.10)
    assert measured[9] < measured[8] and measured[18] < measured[17]  # the resets are there
    growth = np.diff(measured[:9]).mean()  # the first stage: its 32x32 maps, little border effect
    assert growth == pytest.approx(NF_ALPHA**2, rel=0.25)


def test_a_sigmoid_plain_net_without_bn_has_vanishing_gradients_at_init():
    result = init_gradients(depths=(56,), families=("plain",), seeds=(0,), batch_size=64, device="cpu",
                            progress=False, model_options={"norm": "none", "act": "sigmoid"})  # fmt: skip
    ratios = result["ratios"].set_index("stat")["ratio"]
    assert ratios["grad_norm"] < 1e-3 and ratios["act_grad_norm"] < 1e-3
    assert result.settings["variant"] == "no norm, sigmoid"
    with_bn = init_gradients(depths=(56,), families=("plain",), seeds=(0,), batch_size=64, device="cpu",
                             progress=False)  # fmt: skip
    assert with_bn["ratios"].set_index("stat")["ratio"]["grad_norm"] > 1  # BN ReLU plain nets: the opposite


def test_drop_path_drops_the_expected_blocks_in_training_and_scales_in_eval():
    torch.manual_seed(0)
    p = 0.5
    model = build("resnet20", drop_path=p).train()
    blocks = [b for _, b in model.residual_blocks()]
    L = len(blocks)
    assert [b.drop_prob for b in blocks] == pytest.approx([p * (i + 1) / L for i in range(L)])
    dropped = np.zeros(L)
    x = torch.randn(2, 3, 8, 8)
    trials = 300
    for _ in range(trials):
        for i, (block, inp) in enumerate(blocks_with_inputs_train(model, x)):
            dropped[i] += block
    expected = np.array([p * (i + 1) / L for i in range(L)])
    assert np.all(np.abs(dropped / trials - expected) < 4 * np.sqrt(expected * (1 - expected) / trials) + 1e-9)
    assert dropped.sum() / (trials * L) == pytest.approx(p * (L + 1) / (2 * L), abs=0.03)
    model.eval()
    for block, xb in blocks_with_inputs(model, x):  # eval: nothing dropped, F(x) scaled by its survival
        with torch.no_grad():
            out = block.conv1(xb)
            out = block.bn2(block.conv2(F.relu(block.bn1(out))))
            expected_out = F.relu(block.shortcut(xb) + (1 - block.drop_prob) * out)
            assert torch.allclose(block(xb), expected_out, atol=1e-6)


def blocks_with_inputs_train(model, x):
    """Per block, whether it was dropped in one training forward (its output is relu(shortcut))."""
    out = []

    def record(block, args, output):
        with torch.no_grad():
            out.append((bool(torch.equal(output, F.relu(block.shortcut(args[0])))), args[0]))

    handles = [b.register_forward_hook(record) for _, b in model.residual_blocks()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


def test_options_name_runs_apart_and_are_checked_before_any_work():
    quick = load_preset("quick")
    names = {make_run_spec("plain56", quick, model_options=o).name
             for o in ({}, {"norm": "none"}, {"act": "sigmoid"}, {"norm": "none", "act": "sigmoid"})}  # fmt: skip
    assert names == {"plain56-s0", "plain56-nonorm-s0", "plain56-sigmoid-s0", "plain56-nonorm-sigmoid-s0"}
    assert make_run_spec("resnet56", quick, model_options={"drop_path": 0.2}).name == "resnet56-dp0.2-s0"
    with pytest.raises(ModelError, match="fixup56 cannot take"):
        make_run_spec("fixup56", quick, model_options={"norm": "none"})
    with pytest.raises(ModelError, match="has none"):
        make_run_spec("plain56", quick, model_options={"drop_path": 0.2})
    with pytest.raises(ModelError, match="CIFAR layout only"):
        info("prefixup110")
    assert info("fixup50").arch == "cifar" and info("resnet50").arch == "imagenet"


def test_every_family_trains_on_digits_and_describes_itself(tmp_path):
    from gradlab import runs
    from gradlab.train import train

    quick = load_preset("quick")
    for name, options in (("fixup8", {}), ("rezero8", {}), ("skipinit8", {}), ("nfresnet8", {}),
                          ("plain8", {"norm": "none", "act": "tanh"})):  # fmt: skip
        spec = make_run_spec(name, quick, steps=6, recipe={"batch_size": 16, "eval_every": 6, "checkpoint_every": 6},
                             model_options=options)  # fmt: skip
        result = train(spec, tmp_path, progress=False)
        run = runs.read_run(result.run_dir)
        assert run.state == runs.DONE and np.isfinite(run.final("train_loss")), name
        assert run.family == info(name).family and run.model["options"] == options
        assert run.family_key == ("plain (no norm, tanh)" if options else info(name).family)
        assert not run.layers.empty
    from gradlab.analyses.lesion import collect_runs, lesion

    found, _ = collect_runs([tmp_path])
    table = lesion(found, device="cpu", progress=False)["lesion"]
    residual = table[table["family"] != "plain"]
    assert set(residual["family"]) == {"fixup", "rezero", "skipinit", "nfresnet"}
    assert residual["deleted"].all() and residual["test_err"].between(0, 1).all()  # every block, its branch zeroed
    from types import SimpleNamespace

    from gradlab.report.figures_lesion import caption

    text = caption(SimpleNamespace(tables={"lesion": table}))
    assert text.count("its branch F(x) set to zero") == 4  # one per remedy panel (the tanh net is skipped)


def test_fixup_trains_its_scalars_at_a_tenth_of_the_learning_rate(tmp_path):
    from gradlab.train import Trainer

    groups = build("fixup8").param_groups()
    assert groups[1]["lr_scale"] == 0.1 and all(p.numel() == 1 for p in groups[1]["params"])
    assert len(groups[1]["params"]) == 2 + 5 * 3  # stem and head biases, 4 biases and a scale per block
    assert len(build("resnet8").param_groups()) == 1
    spec = make_run_spec("fixup8", load_preset("quick"), steps=2, recipe={"batch_size": 16})
    trainer = Trainer(spec, tmp_path, progress=False)
    trainer.train_step(0)
    lrs = [g["lr"] for g in trainer.parts.optimizer.param_groups]
    assert lrs == pytest.approx([spec.recipe.lr, spec.recipe.lr / 10])
