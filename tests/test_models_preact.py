"""Pre-activation ResNets (He et al. 2016) and their plain twins."""

import pytest
import torch
import torch.nn.functional as F

from gradlab.models import build
from gradlab.models.complexity import count_params
from gradlab.units import format_params
from gradlab.models.preact import PreActBasicBlock, PreActBlock, PreActBottleneck


def test_params_as_in_the_paper():
    # He et al. 2016, Table 2 / Fig. 1: 1.7M, 1.7M, 10.2M (ours counts BN affine too: 10.3M)
    assert format_params(count_params(build("preresnet110"))) == "1.7M"
    assert format_params(count_params(build("preresnet164"))) == "1.7M"
    with torch.device("meta"):  # shapes only: the one build of the 1001-layer net
        big = build("preresnet1001")
    assert count_params(big) == 10327706
    assert (big.depth, big.blocks) == (1001, 333)
    convs_and_fc = sum(p.numel() for n, p in big.named_parameters() if "bn" not in n)
    assert f"{convs_and_fc / 1e6:.1f}M" == "10.2M"


@pytest.mark.parametrize(
    "name, block", [("preresnet110", PreActBasicBlock), ("preresnet164", PreActBottleneck)]
)
def test_block_types_and_widths(name, block):
    model = build(name)
    assert all(isinstance(b, block) for b in model.modules() if isinstance(b, PreActBlock))
    assert model.final_bn.num_features == model.fc.in_features == 64 * block.expansion


def test_bottleneck_layout():
    b = build("preresnet164").layer2[0]
    assert (b.conv1.kernel_size, b.conv2.kernel_size, b.conv3.kernel_size) == ((1, 1), (3, 3), (1, 1))
    assert b.conv2.stride == (2, 2) and b.conv1.stride == (1, 1)
    assert (b.conv1.in_channels, b.conv3.out_channels) == (64, 128)
    assert b.shortcut.in_channels == 64 and b.shortcut.stride == (2, 2)


@pytest.mark.parametrize("name", ["preresnet110", "preplain110", "preresnet164", "preplain164"])
def test_forward_shapes(name):
    model = build(name, num_classes=5)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 5)


def test_plain_twin_is_the_resnet_without_shortcuts():
    with torch.device("meta"):
        res, plain = build("preresnet164"), build("preplain164")
    keys = [k for k in res.state_dict() if ".shortcut." not in f"{k}." and not k.endswith(".shortcut.weight")]
    assert list(plain.state_dict()) == keys
    assert [(n, p.shape) for n, p in plain.named_parameters()] == [
        (n, p.shape) for n, p in res.named_parameters() if ".shortcut" not in n
    ]


def test_block_orders_bn_relu_conv_and_has_no_final_relu():
    torch.manual_seed(0)
    block = build("preresnet110").layer1[3].eval()
    x = torch.randn(2, 16, 8, 8)
    f = block.conv2(F.relu(block.bn2(block.conv1(F.relu(block.bn1(x))))))
    torch.testing.assert_close(block(x), f + x)
    plain = build("preplain110").layer1[3].eval()
    f = plain.conv2(F.relu(plain.bn2(plain.conv1(F.relu(plain.bn1(x))))))
    torch.testing.assert_close(plain(x), f)


def test_projection_shares_the_pre_activation():
    torch.manual_seed(0)
    block = build("preresnet110").layer2[0].eval()
    x = torch.randn(2, 16, 8, 8)
    pre = F.relu(block.bn1(x))
    f = block.conv2(F.relu(block.bn2(block.conv1(pre))))
    torch.testing.assert_close(block(x), f + block.shortcut(pre))


def test_zero_init_residual_zeroes_the_last_conv():
    model = build("preresnet164", zero_init_residual=True)
    blocks = [b for b in model.modules() if isinstance(b, PreActBottleneck)]
    assert all(torch.all(b.conv3.weight == 0) for b in blocks)
    x = torch.randn(2, 64, 8, 8)
    torch.testing.assert_close(model.layer1[1](x), x)  # identity (no ReLU after the sum)
    plain = build("preplain164", zero_init_residual=True)
    assert all(b.conv3.weight.abs().sum() > 0 for b in plain.modules() if isinstance(b, PreActBottleneck))
