"""The pathology suite against its known answers: every pathology put in is found, at the
layer and step where it was put in (NaN, spike, frozen layer, dead units, gate), and the
healthy nets (ResNet-20, NF-ResNet-20, a pre-LN transformer, a residual MLP) raise nothing at
warning or above. The scoring itself is checked on a finding at the wrong place."""

from __future__ import annotations

import pytest

from gradlab.bench.findings_suite import score, suite
from gradlab.bench.pathology_cases import case
from gradlab.findings import ERROR, WARNING, Finding, Place


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return {r["case"]: r for r in suite(tmp_path_factory.mktemp("pathologies"))}


@pytest.mark.slow
def test_every_case_is_as_known(rows):
    assert [name for name, r in rows.items() if not r["ok"]] == []
    assert rows["nan_weight"]["where"] == "fc2.weight (#2)" and rows["nan_weight"]["when"] == "step 20"
    assert rows["loss_spike"]["when"] == "step 40" and rows["frozen_layer"]["where"] == "fc1.weight (#1)"


@pytest.mark.slow
def test_healthy_nets_raise_nothing_at_warning_or_above(rows):
    for name in ("resnet20", "nfresnet20", "transformer", "residual_mlp"):
        assert rows[name]["alarms"] == 0, rows[name]


def test_a_finding_at_the_wrong_layer_or_step_does_not_count():
    c = case("nan_weight")
    wrong = Finding("nonfinite_onset", ERROR, "r", "s", "e", "x", "y", where=(Place("fc3.weight", 3),),
                    first_step=c.step)  # fmt: skip
    assert score(c, [wrong])["ok"] is False and "NOT the layer" in score(c, [wrong])["where"]
    late = Finding("nonfinite_onset", ERROR, "r", "s", "e", "x", "y", where=(Place(c.layer, 2),), first_step=c.step + 5)
    assert score(c, [late])["ok"] is False and "NOT the step" in score(c, [late])["when"]
    assert score(c, [])["detected"] == "NO"
    alarm = Finding("update_ratio", WARNING, "r", "s", "e", "x", "y")
    assert score(case("resnet20"), [alarm])["ok"] is False
