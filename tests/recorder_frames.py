"""Frames of the same training recorded with the reductions in the hooks and deferred to
step(), for tests that check the two agree (on a CPU, and on CUDA in test_gpu.py)."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

import gradlab

KEYS = ["step", "layer", "index", "kind", "stat"]


def frames(model, x, y, autocast=False, steps=2, reduce_at=("hooks", "step"), **kwargs):
    """{reduce_at: frame} of `steps` recorded SGD steps from the same start, on x's device."""
    out = {}
    for where in reduce_at:
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        with gradlab.watch(m, every=1, dense_until=0, reduce_at=where, **kwargs) as rec:
            for _ in range(steps):
                with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss = F.cross_entropy(m(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                rec.step()
                opt.step()
            out[where] = (rec.reductions, rec.frame())
    return out


def assert_same(a, b, rtol=1e-4, atol=1e-6):
    """The same rows (in any order), and values equal within float tolerance (NaN where the
    other is NaN)."""
    assert len(a) == len(b) > 0
    a, b = (f.sort_values(KEYS, kind="stable", ignore_index=True) for f in (a, b))
    assert (a[KEYS].values == b[KEYS].values).all()
    va, vb = a["value"].to_numpy(), b["value"].to_numpy()
    assert (np.isnan(va) == np.isnan(vb)).all()
    ok = ~np.isnan(va)
    np.testing.assert_allclose(vb[ok], va[ok], rtol=rtol, atol=atol)
