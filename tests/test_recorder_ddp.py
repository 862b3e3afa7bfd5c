"""Recorder under DistributedDataParallel: gloo backend, 2 processes on CPU."""

import os
import socket

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab import stat_names as S

WORLD = 2


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def make_data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        ddp = nn.parallel.DistributedDataParallel(make_model())
        x, y = make_data()
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        with gradlab.watch(ddp, every=1) as rec:
            for _ in range(2):
                loss = F.mse_loss(ddp(x[rank::WORLD]), y[rank::WORLD])
                opt.zero_grad()
                loss.backward()
                rec.step()
                opt.step()
            rec.frame().to_pickle(os.path.join(out_dir, f"rank{rank}.pkl"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
@pytest.mark.slow
def test_ddp_gradient_norms_equal_single_process_norms_of_the_averaged_gradient(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    frames = [pd.read_pickle(tmp_path / f"rank{r}.pkl") for r in range(WORLD)]

    # single process, whole batch: the mean loss over equal shards averages their gradients
    model = make_model()
    x, y = make_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = {}
    for step in range(2):
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        for name, p in model.named_parameters():
            expected[(step, name)] = float(p.grad.norm())
        opt.step()

    for df in frames:
        assert not df.layer.str.startswith("module.").any()  # names as without DDP
        grads = df[df.stat == S.GRAD_NORM]
        assert len(grads) == len(expected)
        for row in grads.itertuples():
            assert row.value == pytest.approx(expected[(row.step, row.layer)], rel=1e-5)
        assert set(df[df.stat == S.ACT_MEAN].layer) == {"0", "2"}  # local activations recorded
    # parameter statistics are identical on every rank
    p0, p1 = (f[f.stat.isin(S.PARAM_STATS)].reset_index(drop=True) for f in frames)
    pd.testing.assert_frame_equal(p0, p1)
