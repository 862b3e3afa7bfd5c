"""Zoo nets built with act="sigmoid"/"tanh" apply the activation as a function; their probe
points say so (ProbePoint.act_after), so the recorder records act_sat_frac there and the
findings' saturation rule can read it."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

import gradlab
from gradlab import runs as R
from gradlab import stat_names as S
from gradlab.findings import check_runs
from gradlab.models import ProbePoint, build

SAT_STATS = S.DEFAULT_STATS + (S.ACT_SAT_FRAC,)


def _after(model) -> dict[str, str]:
    return {p.name: p.act_after for p in model.probe_points() if p.act_after}


def test_zoo_points_name_the_saturating_activation_that_follows_them():
    plain = _after(build("plain20", act="sigmoid", norm="none"))
    assert plain["conv1"] == "sigmoid" and plain["layer1.0.conv1"] == "sigmoid"
    assert plain["layer1.0.conv2"] == plain["layer1.0.branch_out"] == "sigmoid"  # plain: act(F(x))
    assert "fc" not in plain and "layer1.0" not in plain  # a block's output is the activation's output
    with_bn = _after(build("plain20", act="tanh"))
    assert with_bn["bn1"] == with_bn["layer1.0.bn1"] == "tanh" and "conv1" not in with_bn  # conv1 feeds its BN
    resnet = _after(build("resnet20", act="sigmoid"))
    assert "layer1.0.bn1" in resnet and "layer1.0.bn2" not in resnet  # F(x) is added to x first
    relu = build("plain20").probe_points()  # a ReLU where the tanh net has its tanh
    assert not any(p.act_after for p in relu) and {p.name for p in relu if p.relu_after} == set(with_bn)


def test_act_after_round_trips_and_older_descriptions_still_load():
    p = ProbePoint("conv1", 0, "conv", act_after="tanh")
    assert ProbePoint.from_dict(p.to_dict()) == p
    old = {k: v for k, v in p.to_dict().items() if k != "act_after"}
    assert ProbePoint.from_dict(old).act_after == ""


def _one_step(model, x):
    seen = {}
    model.conv1.register_forward_hook(lambda m, i, o: seen.setdefault("conv1", o.detach()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gradlab.watch(model, every=1, stats=SAT_STATS) as rec:
            F.cross_entropy(model(x), torch.zeros(len(x), dtype=torch.long)).backward()
            rec.step()
    said = [str(w.message) for w in caught if "act_sat_frac was asked for" in str(w.message)]
    return rec.frame(), seen, said


def test_a_zoo_sigmoid_net_records_act_sat_frac_exactly_and_a_relu_net_does_not():
    torch.manual_seed(0)
    model = build("plain20", act="sigmoid", norm="none")
    with torch.no_grad():
        model.conv1.weight.mul_(4)  # wide pre-activations: a share of them saturates
    df, seen, said = _one_step(model, torch.randn(24, 3, 8, 8))
    sat = df[df.stat == S.ACT_SAT_FRAC].set_index("layer")["value"]
    assert set(sat.index) == set(_after(model)) and said == []
    by_hand = (seen["conv1"][:16].abs() > math.log(99)).double().mean().item()  # the activation sample
    assert 0 < by_hand and sat["conv1"] == by_hand

    df, _, said = _one_step(build("plain20"), torch.randn(24, 3, 8, 8))
    assert S.ACT_SAT_FRAC not in set(df.stat) and len(said) == 1
    assert "act='sigmoid'/'tanh'" in said[0] and "invisible" in said[0]


def _trained(run_dir, act, lr):
    torch.manual_seed(0)
    model = build("plain20", act=act, norm="none")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # act_zero_frac (or act_sat_frac) has no point: tested above
        rec = gradlab.watch(model, run_dir=run_dir, every=1, stats=SAT_STATS)
    with rec:
        for step in range(8):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            rec.step(step)
            opt.step()
    return [f for f in check_runs([R.read_run(run_dir)]) if f.rule == "saturation"]


def test_the_saturation_rule_fires_on_a_zoo_sigmoid_net_driven_hard_and_not_on_healthy_ones(tmp_path):
    (finding,) = _trained(tmp_path / "hot", "sigmoid", 2.0)
    assert "saturate their sigmoid/tanh" in finding.summary
    assert _trained(tmp_path / "calm", "sigmoid", 0.1) == []
    assert _trained(tmp_path / "relu", "relu", 0.1) == []
