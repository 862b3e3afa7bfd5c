"""Names, infos, errors and describe(): the registry contract others code against."""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from gradlab import families
from gradlab.errors import ConfigError, GradlabError, ModelError
from gradlab.models import ModelInfo, ProbePoint, build, describe, info, names


def test_names_per_family_in_order():
    assert names("cifar") == [
        "resnet20", "plain20", "resnet32", "plain32", "resnet44", "plain44",
        "resnet56", "plain56", "resnet110", "plain110", "resnet1202", "plain1202",
    ] + [f"{f}{d}" for f in ("fixup", "rezero", "skipinit", "nfresnet") for d in (20, 56, 110)]
    assert names("preact") == [
        "preresnet110", "preplain110", "preresnet164", "preplain164", "preresnet1001", "preplain1001",
    ]
    assert names("imagenet") == [f"{f}{d}" for d in (18, 34, 50, 101, 152) for f in ("resnet", "plain")]
    assert names("seed") == [f"seed{f}{k}" for k in (2, 4, 8) for f in ("resnet", "plain")]
    assert names() == names("cifar") + names("preact") + names("imagenet") + names("seed")


def test_names_bad_family():
    with pytest.raises(ModelError, match="cifar, preact, imagenet, seed"):
        names("mnist")


@pytest.mark.parametrize("name", names())
def test_info_of_every_named_model(name):
    i = info(name)
    assert isinstance(i, ModelInfo) and i.name == name
    assert i.family in families.names() and i.arch in ("cifar", "preact", "imagenet", "seed")
    if i.family in families.PAPER:  # plain nets and ResNets are each other's twins
        assert info(i.twin).twin == name and info(i.twin).family != i.family
    else:  # a remedy's twin is the plain net of its depth
        assert info(i.twin).family == "plain" and info(i.twin).arch == i.arch
    assert (info(i.twin).depth, info(i.twin).blocks) == (i.depth, i.blocks)


@pytest.mark.parametrize(
    "name, arch, depth, blocks, size",
    [
        ("resnet20", "cifar", 20, 9, (3, 32, 32)),
        ("plain1202", "cifar", 1202, 600, (3, 32, 32)),
        ("resnet8", "cifar", 8, 3, (3, 32, 32)),
        ("preresnet110", "preact", 110, 54, (3, 32, 32)),
        ("preresnet164", "preact", 164, 54, (3, 32, 32)),
        ("preplain1001", "preact", 1001, 333, (3, 32, 32)),
        ("resnet18", "imagenet", 18, 8, (3, 224, 224)),
        ("resnet50", "imagenet", 50, 16, (3, 224, 224)),
        ("plain152", "imagenet", 152, 50, (3, 224, 224)),
        ("seedresnet2", "seed", 6, 2, (1, 28, 28)),
        ("seedplain13", "seed", 28, 13, (1, 28, 28)),
    ],
)
def test_info_fields(name, arch, depth, blocks, size):
    i = info(name)
    assert (i.arch, i.depth, i.blocks, i.input_size) == (arch, depth, blocks, size)


def test_info_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        info("resnet20").depth = 3


def test_name_normalisation_and_cifar_prefix():
    assert info("ResNet20").name == "resnet20"
    assert info("cifar-resnet20").name == "resnet20"
    # resnet50/152 mean ImageNet nets; the CIFAR nets of those depths keep a prefix
    assert info("resnet50").arch == "imagenet"
    c = info("cifar-resnet50")
    assert (c.arch, c.name, c.twin, c.depth, c.blocks) == ("cifar", "cifar-resnet50", "cifar-plain50", 50, 24)
    assert info("cifar-plain152").arch == "cifar"


def test_error_bad_cifar_depth_lists_valid_depths():
    with pytest.raises(ModelError) as e:
        info("resnet21")
    msg = str(e.value)
    assert "6n+2" in msg and "20, 26, 32, 38, 44, 50, 56" in msg and "1202" in msg
    assert "resnet21 is not one" in msg and "resnet20 or resnet26" in msg
    assert "18, 34, 50, 101 or 152" in msg


def test_error_unknown_name_lists_families():
    with pytest.raises(ModelError) as e:
        build("foo12")
    msg = str(e.value)
    assert "foo12" in msg and "gradlab models" in msg
    for family in ("resnet{d}", "plain{d}", "preresnet", "seedresnet{k}"):
        assert family in msg


def test_error_close_name_suggests():
    with pytest.raises(ModelError, match="Did you mean resnet20"):
        info("restnet20")


@pytest.mark.parametrize(
    "name, text",
    [
        ("seedresnet0", "at least one block"),
        ("preresnet100", r"110 \(basic blocks\), 164 and 1001"),
        ("plain4", "plain8"),
        ("cifar-resnet18", "cifar-resnet14 or cifar-resnet20"),
        ("", "unknown model"),
        ("vgg16", r"fixup\{d\}/rezero\{d\}/skipinit\{d\}/nfresnet\{d\} \(CIFAR"),  # every family named
    ],
)
def test_errors(name, text):
    with pytest.raises(ModelError, match=text):
        info(name)


def test_model_error_is_a_gradlab_error():
    assert issubclass(ModelError, GradlabError)
    with pytest.raises(GradlabError):
        build(42)


@pytest.mark.parametrize(
    "name, kwargs, text",
    [
        ("resnet18", {"shortcut": "B"}, "CIFAR nets only"),
        ("preresnet110", {"shortcut": "A"}, "CIFAR nets only"),
        ("seedresnet2", {"shortcut": "A"}, "CIFAR nets only"),
        ("resnet20", {"shortcut": "D"}, "A \\(zero-padding\\)"),
        ("resnet20", {"num_classes": 0}, "num_classes"),
        ("resnet20", {"in_channels": 0}, "in_channels"),
    ],
)
def test_build_option_errors(name, kwargs, text):
    with pytest.raises(ModelError, match=text):
        build(name, **kwargs)


def test_build_sets_identity_attributes():
    m = build("plain20", shortcut="b")  # a plain twin checks the option but has no shortcut
    assert (m.arch, m.family, m.depth, m.blocks, m.name) == ("cifar", "plain", 20, 9, "plain20")


def test_describe_is_json_ready_and_round_trips():
    m = build("resnet20")
    d = describe(m, "resnet20")
    assert json.loads(json.dumps(d)) == d
    assert {k: d[k] for k in ("name", "arch", "family", "depth", "blocks", "params")} == {
        "name": "resnet20", "arch": "cifar", "family": "resnet", "depth": 20, "blocks": 9, "params": 269722,
    }
    assert [ProbePoint.from_dict(p) for p in d["probe_points"]] == m.probe_points()


def test_build_defaults_to_the_architectures_classes_and_describe_to_the_trained_input():
    resnet18 = build("resnet18")  # the ImageNet family's 1000 classes: torchvision's state dicts load
    assert resnet18.fc.out_features == 1000 and info("resnet18").num_classes == 1000
    assert build("resnet20").fc.out_features == 10 and build("resnet18", num_classes=7).fc.out_features == 7
    assert describe(build("resnet20"), "resnet20")["input_size"] == [3, 32, 32]
    digits = build("resnet20", in_channels=1)
    assert describe(digits, "resnet20")["input_size"] == [1, 32, 32]  # its own channels, the default size
    assert describe(digits, "resnet20", input_size=(1, 8, 8))["input_size"] == [1, 8, 8]


def test_model_name_maps_family_depth_and_architecture():
    from gradlab.models import model_name

    assert model_name("plain", 56) == "plain56"
    assert model_name("resnet", 50) == "cifar-resnet50"  # resnet50 names the ImageNet net
    assert model_name("resnet", 50, "imagenet") == "resnet50"
    assert model_name("plain", 110, "preact") == "preplain110"
    with pytest.raises(ConfigError, match="families: unknown dense; choose from plain, resnet"):
        model_name("dense", 20)
    with pytest.raises(ModelError, match="6n\\+2"):
        model_name("plain", 21)
    with pytest.raises(ConfigError, match="arch = 'vgg' is unknown"):
        model_name("plain", 20, "vgg")


def test_describe_counts_trainable_params_only():
    m = build("seedresnet2")
    m.conv1.weight.requires_grad_(False)
    assert describe(m, "seedresnet2")["params"] == 33062 - m.conv1.weight.numel()


def test_describe_rejects_a_mismatched_name():
    with pytest.raises(ModelError, match="names a"):
        describe(build("plain20"), "resnet20")
    with pytest.raises(ModelError, match="not a gradlab zoo model"):
        describe(torch.nn.Linear(2, 2), "resnet20")


def test_names_and_info_do_not_import_torch():
    code = (
        "import sys, gradlab.models as m; from gradlab.models.complexity import complexity;"
        "m.names(); m.info('resnet20'); complexity('resnet1202');"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
