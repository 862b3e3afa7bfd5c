"""Every probe point of every zoo family produces its statistics."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradlab
from gradlab import stat_names as S

models = pytest.importorskip("gradlab.models")
if not hasattr(models, "build"):
    pytest.skip("gradlab.models.build is not available yet", allow_module_level=True)

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
    with gradlab.watch(model, every=1) as rec:
        out = model(x)
        loss = F.cross_entropy(out, torch.zeros(2, dtype=torch.long))
        loss.backward()
        rec.step()
        df = rec.frame()
        points = rec.probe_points
    assert points == model.probe_points()
    outputs = df[df.stat.isin(S.OUTPUT_STATS)]
    per_point = outputs.groupby("layer").stat.nunique()
    missing = [p.name for p in points if per_point.get(p.name, 0) != len(S.OUTPUT_STATS)]
    assert not missing, f"{name}: probe points without all output stats: {missing[:5]}"
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
