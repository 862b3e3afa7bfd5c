"""The seed article's block: conv5x5 -> ReLU -> conv3x3, relu(F(x) + x); plain: relu(F(x))."""

import pytest
import torch
import torch.nn.functional as F

from gradlab.models import build, info
from gradlab.models.seed import SeedBlock


@pytest.mark.parametrize("k", [1, 2, 5])
def test_depth_blocks_and_shapes(k):
    for family in ("resnet", "plain"):
        model = build(f"seed{family}{k}")
        assert model.depth == info(f"seed{family}{k}").depth == 2 * k + 2
        assert model.blocks == k
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_block_layout():
    block = build("seedresnet2").layers[0]
    assert (block.conv1.in_channels, block.conv1.out_channels, block.conv1.kernel_size) == (16, 30, (5, 5))
    assert block.conv1.padding == (2, 2) and block.conv2.padding == (1, 1)
    assert (block.conv2.in_channels, block.conv2.out_channels, block.conv2.kernel_size) == (30, 16, (3, 3))


def test_residual_and_plain_outputs():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 7, 7)
    res, plain = SeedBlock(16, residual=True), SeedBlock(16, residual=False)
    plain.load_state_dict(res.state_dict())
    f = res.conv2(F.relu(res.conv1(x)))
    torch.testing.assert_close(res(x), F.relu(f + x))
    torch.testing.assert_close(plain(x), F.relu(f))


def test_twins_share_parameters():
    a, b = build("seedresnet4"), build("seedplain4")
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]


def test_zero_init_residual():
    model = build("seedresnet2", zero_init_residual=True)
    x = torch.randn(2, 16, 7, 7)
    torch.testing.assert_close(model.layers[1](x), F.relu(x))


def test_other_input_sizes():
    assert build("seedplain2", in_channels=3)(torch.randn(1, 3, 8, 8)).shape == (1, 10)
