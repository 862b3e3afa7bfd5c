"""The registry of families: one place for their names, order, labels, looks and validation."""

import subprocess
import sys

import pytest

from gradlab import families as fam
from gradlab.errors import ConfigError


def test_registered_families_in_the_papers_order_with_their_labels_and_looks():
    assert fam.names() == ("plain", "resnet", "fixup", "rezero", "skipinit", "nfresnet")
    assert fam.PAPER == ("plain", "resnet")  # the default comparison
    assert [fam.get(f).residual for f in fam.names()] == [False, True, True, True, True, True]
    assert len({fam.get(f).marker for f in fam.names()}) == 6  # every family marked apart
    assert fam.label("resnet", 56) == "ResNet-56" and fam.label("plain", 20) == "plain-20"
    plain, resnet = fam.get("plain"), fam.get("resnet")
    assert (plain.residual, resnet.residual) == (False, True)
    assert (plain.marker, plain.linestyle, plain.filled) == ("o", "--", False)
    assert (resnet.marker, resnet.linestyle, resnet.filled) == ("s", "-", True)
    assert (plain.panel_title, resnet.panel_title) == ("plain networks", "ResNets")


def test_unknown_families_get_a_neutral_look_and_sort_last():
    other = fam.get("my-net")  # a run of someone's own model, labelled by the name it was given
    assert not fam.is_known("my-net") and other.label(56) == "my-net" and other.panel_title == "my-net"
    assert other.marker == fam.get("my-net").marker and other.marker not in ("o", "s")


def test_a_family_with_build_options_is_told_apart_but_looks_like_its_own():
    key = fam.keyed("plain", "no norm, sigmoid")
    variant = fam.get(key)
    assert key == "plain (no norm, sigmoid)" and fam.keyed("plain") == "plain"
    assert variant.label(56) == "plain-56 (no norm, sigmoid)" and variant.panel_title == "plain networks (no norm, sigmoid)"
    assert variant.residual is False and variant.linestyle == fam.get("plain").linestyle
    assert variant.marker != fam.get("plain").marker
    assert fam.ordered(["resnet", key, "plain", "fixup"]) == ["plain", key, "resnet", "fixup"]
    assert fam.ordered(["my-net", "resnet", "plain", "resnet"]) == ["plain", "resnet", "my-net"]
    assert sorted(["my-net", "resnet", "plain"], key=fam.sort_key) == ["plain", "resnet", "my-net"]


def test_validation_names_the_valid_families():
    assert fam.parse(" resnet, plain ") == ("resnet", "plain")
    with pytest.raises(ConfigError, match="--families: unknown dense; choose from plain, resnet, fixup, rezero"):
        fam.parse("plain,dense")
    with pytest.raises(ConfigError, match=r"families: unknown \(empty\)"):
        fam.check([])
    with pytest.raises(ValueError, match="registered already"):
        fam.register(fam.Family("plain", "plain", "plain networks", residual=False))


def test_families_import_neither_torch_nor_matplotlib():
    code = "import sys, gradlab.families; assert not {'torch', 'matplotlib'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
