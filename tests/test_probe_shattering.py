"""Shattered gradients (gradlab.analyses.shattering): known answers, the plain/residual gap, the CLI."""

import json

import pytest
import torch
from click.testing import CliRunner

from gradlab.analysis_dirs import read_analysis
from gradlab.cli.main import cli
from gradlab.errors import ConfigError
from gradlab.analyses.shattering import ShatteringSettings, _forward, _Weights, input_gradients, predicted, shattering


def lag1(result, family):
    a = result["autocorr"]
    a = a[(a["lag"] == 1) & (a["family"] == family)]
    return a.groupby("depth")["corr"].mean()


def pairs(result, family):
    p = result["pairs"]
    return p[p["family"] == family].groupby("depth")["corr"].mean()


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("residual", [False, True])
def test_forward_mode_gradients_equal_reverse_mode_autograd(batch_norm, residual):
    s = ShatteringSettings(max_depth=6, width=24, points=40, seeds=1, batch_norm=batch_norm, max_lag=3).validated()
    x = torch.linspace(s.low, s.high, s.points, dtype=torch.float64).requires_grad_()
    w = _Weights.draw(s, seed=3)
    w = _Weights(w.w_in.double(), w.b_in.double(), [t.double() for t in w.blocks], [t.double() for t in w.biases],
                 [t.double() for t in w.heads])  # float64: agreement to 1e-9
    outs, grads = _forward(w, x, residual, s)
    for depth in range(s.max_depth):
        (reverse,) = torch.autograd.grad(outs[depth].sum(), x, retain_graph=True)
        torch.testing.assert_close(grads[depth], reverse, rtol=1e-9, atol=1e-9)


def test_linear_net_has_a_constant_gradient_so_every_correlation_is_one():
    s = ShatteringSettings(max_depth=8, width=16, points=64, seeds=2, activation="linear", max_lag=10)
    g = input_gradients(s, seed=0, residual=False)
    assert torch.allclose(g, g[:, :1].expand_as(g), rtol=1e-4)
    result = shattering(s, progress=False)
    assert result["autocorr"]["corr"].to_numpy() == pytest.approx(1.0, abs=1e-5)
    assert result["pairs"]["corr"].to_numpy() == pytest.approx(1.0, abs=1e-5)


def test_depth_one_plain_and_residual_nets_are_the_same_net():
    s = ShatteringSettings(max_depth=3, width=16, points=32, seeds=1)
    plain, res = input_gradients(s, 0, residual=False), input_gradients(s, 0, residual=True)
    torch.testing.assert_close(plain[0], res[0])
    assert not torch.allclose(plain[2], res[2])


def test_plain_nets_follow_the_predicted_two_to_the_minus_depth_at_small_depth():
    """The paper's setting (width 200, 256 points, BN); Theorem 1: correlation 2^-L."""
    result = shattering(ShatteringSettings(max_depth=3, seeds=10, max_lag=1), progress=False)
    measured = pairs(result, "plain")
    for depth in (1, 2, 3):
        assert 0.5 < measured[depth] / predicted("plain", depth) < 2.0, (depth, measured[depth])
    assert pairs(result, "resnet")[3] > 1.5 * measured[3]


def test_residual_gradients_stay_correlated_where_plain_ones_shatter():
    result = shattering(ShatteringSettings(max_depth=30, width=100, seeds=6, max_lag=2), progress=False)
    plain, res = lag1(result, "plain"), lag1(result, "resnet")
    assert plain[1] > 0.95 and res[1] > 0.95  # one hidden layer: a smooth (piecewise-constant) gradient
    deep = range(20, 31)
    assert plain[list(deep)].abs().max() < 0.2  # white noise
    assert res[list(deep)].min() > 0.4
    assert all(res[d] > plain[d] + 0.3 for d in deep)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="max_lag"):
        ShatteringSettings(points=16, max_lag=16).validated()
    with pytest.raises(ConfigError, match="example depths"):
        ShatteringSettings(max_depth=4, example_depths=(9,)).validated()


SMALL = ["analyze", "shattering", "--max-depth", "6", "--width", "16", "--points", "32", "--seeds", "2",
         "--max-lag", "4", "--formats", "png"]  # fmt: skip


def test_cli_writes_an_analysis_folder_with_its_figure(tmp_path):
    out = tmp_path / "shattering"
    result = CliRunner().invoke(cli, SMALL + ["--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "figures" / "probe-shattering.png").stat().st_size > 10_000
    analysis = read_analysis(out)
    assert analysis.kind == "probe-shattering" and analysis.settings["width"] == 16
    assert set(analysis.tables["pairs"]["depth"]) == set(range(1, 7))
    assert len(analysis.tables["autocorr"]) == 2 * 6 * 2 * 4
    assert "neighbouring inputs correlate" in result.output
    again = CliRunner().invoke(cli, SMALL + ["--out", str(out)])  # an earlier result is replaced
    assert again.exit_code == 0, again.output


def test_the_old_name_probe_works_the_same_and_says_the_new_one(tmp_path):
    new = CliRunner().invoke(cli, SMALL + ["--out", str(tmp_path / "new")])
    old = CliRunner().invoke(cli, ["probe", *SMALL[1:], "--out", str(tmp_path / "old")])
    assert old.exit_code == 0, old.output
    assert old.stderr == "note: `gradlab probe` is now `gradlab analyze`\n" and "note:" not in new.stderr
    assert read_analysis(tmp_path / "old").tables["pairs"].equals(read_analysis(tmp_path / "new").tables["pairs"])
    assert old.stdout.splitlines()[2:] == new.stdout.splitlines()[2:]  # after "wrote ... in N s" and the figure
    listed = CliRunner().invoke(cli, ["--help"]).output
    assert "analyze" in listed and "probe" not in listed


def test_cli_refuses_a_folder_holding_something_else_and_leaves_it_alone(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(cli, SMALL + ["--out", str(out)])
    assert result.exit_code != 0 and "not empty" in result.output
    assert "Traceback" not in result.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"


def test_cli_bad_option_is_a_clear_error_and_writes_nothing(tmp_path):
    out = tmp_path / "x"
    result = CliRunner().invoke(cli, ["analyze", "shattering", "--points", "8", "--max-lag", "8", "--out", str(out)])
    assert result.exit_code != 0 and "max_lag" in result.output
    assert not out.exists()


def test_settings_are_recorded(tmp_path):
    out = tmp_path / "s"
    assert CliRunner().invoke(cli, SMALL + ["--no-bn", "--out", str(out)]).exit_code == 0
    meta = json.loads((out / "analysis.json").read_text())
    assert meta["settings"]["batch_norm"] is False and meta["settings"]["points"] == 32
