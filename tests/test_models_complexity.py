"""Parameter and MAC counts: the analytic count (used by `gradlab models`) equals the
forward-hook count on built models, and rounds as the papers do."""

import pytest
import torch

from gradlab.models import build, info
from gradlab.models.complexity import complexity, count_macs, count_params
from gradlab.units import format_macs, format_params


CASES = [
    ("resnet20", {"shortcut": "A"}, None),
    ("resnet20", {"shortcut": "B"}, None),
    ("resnet20", {"shortcut": "C"}, None),
    ("plain20", {"shortcut": "C"}, None),
    ("resnet32", {}, (3, 8, 8)),
    ("preresnet110", {}, (3, 8, 8)),
    ("preplain110", {}, (3, 8, 8)),
    ("preresnet164", {}, (3, 8, 8)),
    ("preplain164", {}, (3, 8, 8)),
    ("resnet18", {}, (3, 64, 64)),
    ("plain34", {}, (3, 64, 64)),
    ("resnet50", {}, (3, 64, 64)),
    ("plain50", {}, (3, 64, 64)),
    ("seedresnet2", {}, None),
    ("seedplain3", {}, (3, 12, 12)),
    ("plain20", {"norm": "none"}, None),
    ("resnet20", {"norm": "none"}, (3, 8, 8)),
    ("fixup20", {}, None),
    ("rezero20", {}, None),
    ("skipinit20", {}, (1, 8, 8)),
    ("nfresnet20", {}, None),
    ("nfresnet56", {}, (3, 8, 8)),
]


@pytest.mark.parametrize("name, kwargs, size", CASES, ids=[f"{n}-{k}-{s}" for n, k, s in CASES])
def test_analytic_count_equals_hook_count(name, kwargs, size):
    meta = info(name)
    classes = meta.num_classes
    with torch.device("meta"):  # shapes are all the count needs
        model = build(name, num_classes=classes, in_channels=(size or meta.input_size)[0], **kwargs)
    expected = (count_params(model), count_macs(model, size or meta.input_size))
    got = complexity(name, in_channels=(size or meta.input_size)[0], input_size=size, **kwargs)
    assert got == expected


def test_count_macs_restores_training_mode_and_removes_hooks():
    model = build("seedresnet2").train()
    count_macs(model, (1, 28, 28))
    assert model.training
    assert not any(m._forward_hooks for m in model.modules())


def test_count_macs_on_real_weights():
    model = build("resnet20")
    assert count_macs(model, (3, 32, 32)) == complexity("resnet20")[1]


def test_paper_numbers():
    # He et al. 2015: ResNet-20 41M FLOPs (multiply-adds) on CIFAR; Table 1: 1.8G, 3.6G
    assert format_macs(complexity("resnet20")[1]) == "41M"
    assert format_macs(complexity("resnet18")[1]) == "1.8G"
    assert complexity("resnet18")[0] == 11689512
    assert 3.6e9 < complexity("resnet34")[1] < 3.7e9
    table6 = {20: "0.27M", 32: "0.46M", 44: "0.66M", 56: "0.85M", 110: "1.7M", 1202: "19.4M"}
    for depth, text in table6.items():
        assert format_params(complexity(f"resnet{depth}")[0]) == text
        assert complexity(f"plain{depth}")[0] == complexity(f"resnet{depth}")[0]


def test_plain_imagenet_twins_lose_exactly_the_projections():
    res, plain = complexity("resnet50")[0], complexity("plain50")[0]
    shapes = [(64, 256), (256, 512), (512, 1024), (1024, 2048)]
    projections = sum(c_in * c_out + 2 * c_out for c_in, c_out in shapes)
    assert res - plain == projections


def test_formatting():
    assert [format_params(n) for n in (999, 33062, 131258, 1727962, 19421274)] == [
        "999", "33.1K", "0.13M", "1.7M", "19.4M"]
    macs = (512, 40551040, 252887680, 11513626624)
    assert [format_macs(n) for n in macs] == ["512", "41M", "253M", "11.5G"]
