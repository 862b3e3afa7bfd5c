"""ImageNet ResNets: key-for-key and output equivalence with torchvision; plain twins."""

import pytest
import torch
import torchvision

from gradlab.models import build
from gradlab.models.complexity import count_params
from gradlab.models.imagenet import BasicBlock, Bottleneck


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def _meta(name: str, **kwargs):
    with torch.device("meta"):  # shapes only: no weights to initialise
        return build(name, **kwargs)


@pytest.mark.parametrize("depth", [18, 50])
def test_matches_torchvision(depth):
    torch.manual_seed(depth)
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=10)
    _randomise(reference, depth)
    reference.eval()
    ours = build(f"resnet{depth}", num_classes=10).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert count_params(ours) == count_params(reference)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


@pytest.mark.parametrize("depth", [34, 101, 152])
def test_state_dict_keys_match_torchvision(depth):
    with torch.device("meta"):
        reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    ours = _meta(f"resnet{depth}", num_classes=1000)
    ref = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == ref


def test_parameter_counts_match_torchvision():
    assert count_params(_meta("resnet18", num_classes=1000)) == 11689512
    assert count_params(_meta("resnet50", num_classes=1000)) == 25557032


@pytest.mark.parametrize("depth", [18, 50])
def test_plain_twin_is_the_resnet_without_downsample(depth):
    res, plain = _meta(f"resnet{depth}"), _meta(f"plain{depth}")
    assert list(plain.state_dict()) == [k for k in res.state_dict() if ".downsample." not in k]
    assert not any("downsample" in n for n, _ in plain.named_modules() if n)
    assert all(b.downsample is None for b in plain.modules() if isinstance(b, (BasicBlock, Bottleneck)))


def test_bottleneck_strides_on_the_3x3():
    b = _meta("resnet50").layer3[0]
    assert b.conv1.stride == (1, 1) and b.conv2.stride == (2, 2)
    assert b.downsample[0].stride == (2, 2)


def test_zero_init_residual_zeroes_the_last_bn_of_each_branch():
    ours = build("resnet50", zero_init_residual=True)
    zero = [n for n, p in ours.named_parameters() if torch.all(p == 0) and "bias" not in n]
    assert zero == [f"{n}.bn3.weight" for n, m in ours.named_modules() if isinstance(m, Bottleneck)]
    assert len(zero) == 16  # as torchvision's zero_init_residual
    block = build("resnet18", zero_init_residual=True).layer1[1]
    x = torch.randn(2, 64, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_grey_input_channels():
    model = build("plain18", in_channels=1, num_classes=3)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
