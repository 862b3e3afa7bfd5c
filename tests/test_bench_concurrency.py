"""The concurrency benchmark: the stacked step is real training, and the command runs."""

import copy
import json

import pytest
import torch
from click.testing import CliRunner

from gradlab import models
from gradlab.bench.concurrency import single_step, stacked_step
from gradlab.cli.main import cli


def test_stacked_step_trains_each_model_exactly_as_alone():
    torch.manual_seed(0)
    nets = [models.build("resnet8") for _ in range(2)]
    alone = [copy.deepcopy(n) for n in nets]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (2, 8), generator=g)
    step, params, buffers = stacked_step(nets, x, y)
    for _ in range(2):
        step()
    for i, net in enumerate(alone):
        s = single_step(net, x[i], y[i])
        for _ in range(2):
            s()
        for name, p in net.named_parameters():
            torch.testing.assert_close(params[name][i], p.detach(), rtol=1e-4, atol=1e-5)
        for name, b in net.named_buffers():
            torch.testing.assert_close(buffers[name][i], b, rtol=1e-4, atol=1e-5)
    assert not torch.equal(params["fc.weight"][0], params["fc.weight"][1])  # two different models


@pytest.mark.slow
def test_concurrency_command_reports_all_variants(tmp_path):
    out = tmp_path / "c.json"
    result = CliRunner().invoke(cli, ["bench", "concurrency", "--model", "resnet8", "--runs", "2", "--batch-size", "8",
                                      "--steps", "1", "--repeats", "1", "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for variant in ("single", "processes", "stacked"):
        assert data["results"][variant]["images_per_s"] > 0
    assert len(data["results"]["processes"]["workers"]) == 2
    faster = max(("processes", "stacked"), key=lambda v: data["results"][v]["images_per_s"])
    assert data["best"] == faster  # the one the figures favour, whichever it is on this machine
    assert f"more total images/s: {faster}" in result.output
