"""CIFAR ResNets/plain nets: Table 6 sizes, twins, shortcut options, zero-init."""

import pytest
import torch
import torch.nn.functional as F

from gradlab.models import build
from gradlab.models.cifar import BasicBlock, PadShortcut
from gradlab.models.complexity import count_params
from gradlab.units import format_params


# He et al. 2015, Table 6 (option A)
TABLE6 = {"resnet20": "0.27M", "resnet32": "0.46M", "resnet44": "0.66M", "resnet56": "0.85M",
          "resnet110": "1.7M", "resnet1202": "19.4M"}


def paper_round(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n < 1e6 else f"{n / 1e6:.1f}M"


@pytest.mark.parametrize("name", ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"])
def test_table6_params(name):
    params = count_params(build(name))
    assert paper_round(params) == TABLE6[name] == format_params(params)


def test_table6_params_resnet1202():
    with torch.device("meta"):  # shapes only: the one build of the 1202-layer net
        model = build("resnet1202")
    params = count_params(model)
    assert paper_round(params) == "19.4M" and params == 19421274
    assert model.depth == 1202 and model.blocks == 600


@pytest.mark.parametrize("depth", [20, 56])
def test_plain_twin_has_the_same_parameters_with_option_a(depth):
    res, plain = build(f"resnet{depth}"), build(f"plain{depth}")
    shapes = lambda m: [(n, tuple(p.shape)) for n, p in m.named_parameters()]  # noqa: E731
    assert shapes(res) == shapes(plain)
    assert list(res.state_dict()) == list(plain.state_dict())
    assert plain.family == "plain" and res.family == "resnet"


def test_plain_twin_computes_relu_of_the_branch():
    torch.manual_seed(0)
    block = build("plain20").layer1[1].eval()
    x = torch.randn(2, 16, 8, 8)
    f = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
    torch.testing.assert_close(block(x), F.relu(f))


def test_residual_block_adds_the_shortcut():
    torch.manual_seed(0)
    block = build("resnet20").layer2[0].eval()  # stage transition, option A
    x = torch.randn(2, 16, 8, 8)
    f = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
    shortcut = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 16, 4, 4)], 1)
    torch.testing.assert_close(block(x), F.relu(f + shortcut))


def _projections(model):
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and ".shortcut" in n]


def test_shortcut_options_a_b_c():
    a, b, c = (build("resnet20", shortcut=s) for s in "ABC")
    assert _projections(a) == []
    assert sum(isinstance(m, PadShortcut) for m in a.modules()) == 2
    assert _projections(b) == ["layer2.0.shortcut.0", "layer3.0.shortcut.0"]
    assert len(_projections(c)) == 9
    pa, pb, pc = count_params(a), count_params(b), count_params(c)
    assert pb - pa == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # two 1x1 convs + BNs
    assert pc - pb == 3 * (16 * 16 + 32) + 2 * (32 * 32 + 64) + 2 * (64 * 64 + 128)
    x = torch.randn(2, 3, 32, 32)
    for m in (a, b, c):
        assert m(x).shape == (2, 10)
    assert isinstance(b.layer1[0].shortcut, torch.nn.Identity)
    assert b.shortcut_option == "B"


def test_plain_twin_ignores_shortcut_option():
    assert count_params(build("plain20", shortcut="C")) == count_params(build("plain20"))
    assert _projections(build("plain20", shortcut="C")) == []


@pytest.mark.parametrize("name", ["resnet20", "plain20", "resnet8", "cifar-plain50"])
def test_forward_shapes(name):
    model = build(name, num_classes=7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_small_grey_inputs():
    # the offline preset: 1x8x8 digits
    model = build("resnet20", in_channels=1)
    assert model.conv1.in_channels == 1
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_backward_reaches_every_parameter():
    model = build("resnet20", shortcut="B")
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_init_is_kaiming_fan_out_and_bn_identity():
    torch.manual_seed(0)
    model = build("resnet56")
    w = model.layer3[4].conv1.weight  # fan_out = 64 * 9
    assert abs(w.std().item() - (2 / (64 * 9)) ** 0.5) < 0.01
    assert torch.all(model.layer2[1].bn2.weight == 1) and torch.all(model.layer2[1].bn2.bias == 0)


def test_zero_init_residual_makes_blocks_identity_plus_relu():
    model = build("resnet20", zero_init_residual=True)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9 and all(torch.all(b.bn2.weight == 0) for b in blocks)
    assert all(torch.all(b.bn1.weight == 1) for b in blocks)
    x = torch.randn(2, 16, 8, 8)
    for mode in (True, False):
        model.train(mode)
        torch.testing.assert_close(model.layer1[1](x), F.relu(x))
    shortcut = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 16, 4, 4)], 1)
    torch.testing.assert_close(model.layer2[0](x), F.relu(shortcut))


def test_zero_init_residual_leaves_plain_twins_alone():
    model = build("plain20", zero_init_residual=True)
    assert all(torch.all(b.bn2.weight == 1) for b in model.modules() if isinstance(b, BasicBlock))
