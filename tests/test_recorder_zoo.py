"""Every probe point of every zoo family produces its statistics."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradlab
from gradlab import stat_names as S

from gradlab import models

CASES = [
    ("resnet20", (3, 32, 32)),
    ("plain20", (3, 32, 32)),
    ("preresnet110", (3, 32, 32)),
    ("resnet18", (3, 64, 64)),
    ("seedresnet2", (1, 28, 28)),
]


@pytest.mark.parametrize("name,shape", CASES)
def test_every_probe_point_produces_its_stats(name, shape):
    torch.manual_seed(0)
    model = models.build(name)
    x = torch.randn(2, *shape)
    block_outputs = {}  # the blocks' outputs, for act_zero_frac's known answer
    names = {m: n for n, m in model.named_modules()}
    keep = [m.register_forward_hook(lambda m, a, o: block_outputs.__setitem__(names[m], o.detach().clone()))
            for n, m in model.named_modules() if n in {p.block for p in model.probe_points() if p.block}]
    with gradlab.watch(model, every=1) as rec:
        out = model(x)
        loss = F.cross_entropy(out, torch.zeros(2, dtype=torch.long))
        loss.backward()
        rec.step()
        df = rec.frame()
        points = rec.probe_points
    assert points == model.probe_points()
    for h in keep:
        h.remove()
    outputs = df[df.stat.isin(S.OUTPUT_STATS)]
    got = outputs.groupby("layer").stat.agg(set)
    # act_zero_frac only where a ReLU follows the point or produced its output
    want = {p.name: set(S.OUTPUT_STATS) - (set() if p.next_to_relu else {S.ACT_ZERO_FRAC})
            for p in points}
    wrong = [p.name for p in points if got.get(p.name, set()) != want[p.name]]
    assert not wrong, f"{name}: probe points without the right output stats: {wrong[:5]}"
    relu_blocks = [p for p in points if p.kind == "block" and p.relu_output]
    assert bool(relu_blocks) == (not name.startswith("pre"))  # pre-activation blocks end with the sum
    zero = outputs[outputs.stat == S.ACT_ZERO_FRAC].set_index("layer").value
    for p in relu_blocks:  # the exact zeros of the block's final ReLU
        assert zero[p.name] == pytest.approx((block_outputs[p.name] == 0).double().mean().item(), abs=1e-6)
    assert np.isfinite(outputs.value).all()
    assert set(outputs["index"]) == {p.index for p in points}

    blocks = {p.block for p in points if p.kind == "branch"}
    ratios = df[df.stat == S.BRANCH_RATIO]
    assert set(ratios.layer) == blocks and len(blocks) > 0
    assert (ratios.kind == "block").all() and np.isfinite(ratios.value).all()

    params = dict(model.named_parameters())
    grads = df[df.stat == S.GRAD_NORM]
    assert set(grads.layer) == set(params)
    assert (grads["index"] >= 0).all()  # every zoo parameter belongs to a probe point
