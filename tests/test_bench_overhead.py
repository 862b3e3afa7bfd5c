"""`gradlab bench overhead`: runs end to end and reports its figures (timings are not asserted)."""

import json

import pytest
from click.testing import CliRunner

from gradlab import stat_names as S
from gradlab.bench.overhead import run_overhead
from gradlab.bench.timing import (
    Timings,
    aten_ops,
    describe_environment,
    interleaved,
    median_interval,
    round_order,
    round_ratios,
    summarize,
)
from gradlab.environment import resolve_device
from gradlab.cli.main import cli

TINY = dict(model="resnet8", steps=1, repeats=2, batch_size=4, warmup=0)


def check_result(result, variants):
    assert set(result) >= {"settings", "environment", "variants", "ratios", "gradlab_rows", "skipped"}
    assert set(result["variants"]) == set(variants)
    for v in result["variants"].values():
        assert v["n"] == 2
        for key in ("median_s", "p25_s", "p75_s", "min_s", "images_per_s"):
            assert v[key] > 0, key
    assert set(result["ratios"]) == set(variants) - {"bare"}
    assert all(r > 0 for r in result["ratios"].values())
    assert set(result["round_ratios"]) == set(result["ratios"])
    for r in result["round_ratios"].values():
        assert r["n"] == 2 and 0 < r["min"] <= r["median"] <= r["max"]
        assert r["ci95"] is None  # two rounds cannot give a 95 % interval
    assert result["gradlab_rows"] > 0
    ops = {name: v["aten_ops"] for name, v in result["variants"].items()}
    assert 0 < ops["bare"] < ops["gradlab"]  # recording every step adds operators
    s = result["settings"]
    assert s["model"] == "resnet8" and s["batch_size"] == 4 and s["device"] == "cpu"
    assert result["environment"]["torch"]


def test_run_overhead_with_wandb_offline(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing may be left in the working directory
    result = run_overhead(device="cpu", **TINY)
    variants = {"bare", "gradlab"} | ({"wandb"} if "wandb" not in result["skipped"] else set())
    check_result(result, variants)
    timed = "wandb" in result["variants"]
    assert result["settings"]["wandb"].startswith("wandb.watch(model") == timed  # (else "not timed")
    assert list(tmp_path.iterdir()) == []


def test_cli_overhead_writes_json(tmp_path):
    out = tmp_path / "sub" / "overhead.json"
    args = ["bench", "overhead", "--model", "resnet8", "--steps", "1", "--repeats", "2", "--batch-size", "4"]
    args += ["--warmup", "0", "--device", "cpu", "--no-wandb", "--json", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "bare" in res.output and "gradlab" in res.output and "x bare" in res.output and "aten ops" in res.output
    assert "torch" in res.output and "resnet8" in res.output
    assert "too few rounds for a 95% CI (--repeats 6 or more)" in res.output  # 2 rounds
    assert "\r" not in res.output  # no progress bar when stdout is not a terminal
    data = json.loads(out.read_text())
    check_result(data, {"bare", "gradlab"})
    assert data["skipped"] == {"wandb": "disabled (--no-wandb)"}
    assert "; wandb: not timed" in res.output and "wandb.watch(model" not in res.output  # (said of the run only when timed)


def test_cli_rejects_bad_arguments():
    runner = CliRunner()
    res = runner.invoke(cli, ["bench", "overhead", "--steps", "0"])
    assert res.exit_code == 2 and "--steps" in res.output
    res = runner.invoke(cli, ["bench", "overhead", "--model", "resnet9", "--no-wandb", "--device", "cpu"])
    assert res.exit_code == 1 and "resnet9" in res.output and "Traceback" not in res.output


def test_a_selection_of_statistics_is_recorded_and_costs_less_than_all():
    subset = run_overhead(device="cpu", with_wandb=False, stats=["grad_norm", "act_grad_norm"], **TINY)
    full = run_overhead(device="cpu", with_wandb=False, **TINY)
    assert subset["settings"]["stats"] == ["grad_norm", "act_grad_norm"]
    assert "stats grad_norm,act_grad_norm" in subset["settings"]["gradlab"]
    assert full["settings"]["stats"] == list(S.DEFAULT_STATS) and "all default stats" in full["settings"]["gradlab"]
    ops = lambda r, v: r["variants"][v]["aten_ops"]  # noqa: E731
    assert ops(subset, "bare") < ops(subset, "gradlab") < ops(full, "gradlab")
    assert 0 < subset["gradlab_rows"] < full["gradlab_rows"]


def test_cli_names_an_unknown_statistic_and_the_valid_ones():
    res = CliRunner().invoke(cli, ["bench", "overhead", "--stats", "grad_norm,act_grad", "--no-wandb", "--device", "cpu"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "'act_grad'" in res.output and "act_grad_norm" in res.output
    res = CliRunner().invoke(cli, ["bench", "overhead", "--stats", ",", "--no-wandb", "--device", "cpu"])
    assert res.exit_code == 1 and "stats is empty" in res.output


def test_bench_group_lists_overhead():
    res = CliRunner().invoke(cli, ["bench", "--help"])
    assert res.exit_code == 0 and "overhead" in res.output


def test_timing_helpers():
    import torch

    dev = resolve_device("cpu")
    calls = []
    t = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, steps=2, repeats=2, device=dev, warmup=1)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] + ["b", "b", "a", "a"]  # warm-up, then rounds, order rotated
    assert isinstance(t, Timings) and len(t.steps["a"]) == 4 and t.median("b") >= 0
    s = summarize([3.0, 1.0, 2.0])
    assert s["median_s"] == 2.0 and s["min_s"] == 1.0 and s["n"] == 3
    assert summarize([])["n"] == 0
    env = describe_environment(dev)
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda"}


def test_resolve_device_without_cuda_is_a_clear_error():
    import torch

    from gradlab.errors import GradlabError

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(GradlabError, match="CUDA"):
        resolve_device("cuda")


def test_quartiles_stay_within_the_measured_times():
    s = summarize([0.01, 0.5])  # two steps, one stalled: exclusive quantiles would give p25 < 0
    assert 0.01 <= s["p25_s"] <= s["median_s"] <= s["p75_s"] <= 0.5


def test_round_ratios_pair_each_round_with_the_same_round_of_the_base():
    # two rounds of 3 steps; the machine is twice as slow in round 2, the ratio is not
    t = Timings({"bare": [1.0, 1.2, 1.1, 2.0, 2.4, 2.2], "rec": [1.1, 1.3, 1.2, 2.2, 2.6, 2.4]})
    assert round_ratios(t, "rec", "bare", 3) == pytest.approx([1.2 / 1.1, 2.4 / 2.2])
    assert round_ratios(t, "bare", "bare", 3) == [1.0, 1.0]
    assert round_ratios(t, "rec", "bare", 4) == pytest.approx([1.25 / 1.15])  # a partial round is left out


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_round_order_balances_first_places_and_predecessors(k):
    names = [chr(ord("a") + i) for i in range(k)]
    orders = [round_order(names, r) for r in range(2 * k)]
    assert all(sorted(o) == names for o in orders)
    firsts = [o[0] for o in orders]
    assert all(firsts.count(n) == 2 for n in names)
    pairs = [(o[i], o[i + 1]) for o in orders for i in range(k - 1)]
    # within rounds, every variant follows every other one equally often
    assert len(set(pairs)) == k * (k - 1) and len({pairs.count(p) for p in set(pairs)}) == 1


def test_aten_ops_counts_dispatched_operators():
    import torch

    a, b = torch.ones(3), torch.ones(3)
    assert aten_ops(lambda: None) == 0
    assert aten_ops(lambda: torch.add(a, b)) == 1
    assert aten_ops(lambda: (a + b).sum()) == 2


def test_op_count_is_of_a_recorded_step_whatever_the_interval():
    result = run_overhead(device="cpu", every=5, with_wandb=False, **TINY)
    ops = {name: v["aten_ops"] for name, v in result["variants"].items()}
    assert ops["gradlab"] > ops["bare"]  # the timed steps were mostly unrecorded; the counted one is not


def test_median_interval_is_the_order_statistics_of_the_binomial_table():
    import math

    assert median_interval([1.0] * 5) is None  # min..max of 5 covers only 93.75 %
    assert median_interval([3, 1, 2, 6, 5, 4]) == (1, 6)  # n = 6: min..max, 96.9 %
    assert median_interval(list(range(10))) == (1, 8)  # n = 10: 2nd and 9th smallest
    assert median_interval(list(range(18))) == (4, 13)  # n = 18: 5th and 14th
    for n in range(6, 40):
        lo, hi = median_interval(list(range(n)))
        k = lo + 1
        tail = sum(math.comb(n, i) for i in range(k)) / 2**n  # P(fewer than k below the median)
        wider = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
        assert hi == n - k and tail <= 0.025 < wider  # the narrowest interval with >= 95 % coverage


def test_lightning_rows_time_a_bare_lightning_step_against_the_callback(monkeypatch, tmp_path):
    pytest.importorskip("lightning.pytorch")
    monkeypatch.chdir(tmp_path)  # Lightning's folders go to a temporary directory, not here
    result = run_overhead(device="cpu", with_wandb=False, with_lightning=True, **TINY)
    lightning = result["lightning"]
    assert set(lightning["variants"]) == {"lightning", "lightning+gradlab"}
    for v in lightning["variants"].values():
        assert v["n"] == 2 and v["median_s"] > 0 and v["images_per_s"] > 0
    assert lightning["ratio"] > 0 and lightning["round_ratios"]["n"] == 2
    assert list(tmp_path.iterdir()) == []
    res = CliRunner().invoke(cli, ["bench", "overhead", "--model", "resnet8", "--steps", "1", "--repeats", "2",
                                   "--batch-size", "4", "--warmup", "0", "--device", "cpu", "--no-wandb",
                                   "--lightning"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "lightning+gradlab" in res.output and "x lightning round by round" in res.output


def test_cases_side_by_side_include_the_transformer_and_batch_sizes():
    from gradlab.bench.overhead import format_cases, run_overhead_cases

    result = run_overhead_cases("resnet8@2,transformer@2", device="cpu", steps=1, repeats=2, warmup=0,
                                with_wandb=False)  # fmt: skip
    first, second = result["cases"]
    assert (first["settings"]["model"], first["settings"]["batch_size"]) == ("resnet8", 2)
    assert (second["settings"]["model"], second["settings"]["batch_size"]) == ("transformer", 2)
    assert second["settings"]["input"] == "2 sequences of 8 tokens" and second["gradlab_rows"] > 0
    text = format_cases(result)
    assert "cases side by side" in text and "resnet8@2" in text and "transformer@2" in text


def test_case_names_are_checked_before_any_timing():
    from gradlab.bench.overhead_cases import parse_cases

    assert parse_cases("resnet56,transformer,resnet20@8", None) == [
        ("resnet56", "resnet56", 128), ("transformer", "transformer", 4), ("resnet20@8", "resnet20", 8)]
    assert parse_cases("resnet8", 4) == [("resnet8", "resnet8", 4)]
    res = CliRunner().invoke(cli, ["bench", "overhead", "--model", "resnet8@0,transformer", "--no-wandb"])
    assert res.exit_code == 1 and "positive whole number" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["bench", "overhead", "--model", "transformer,resnet9", "--no-wandb"])
    assert res.exit_code == 1 and "resnet9" in res.output and "Traceback" not in res.output


@pytest.mark.slow
def test_the_compile_case_times_unrecorded_steps_and_says_what_recorded_steps_got():
    from gradlab.bench.compile_overhead import format_result, run_compile_overhead

    result = run_compile_overhead("transformer@2", steps=2, repeats=2, device="cpu", backend="aot_eager")
    assert set(result["variants"]) == {"compiled", "compiled+gradlab"} and result["ratio"] > 0
    assert result["recompile_limit_messages"] == 0
    assert {S.ACT_MEAN, S.ACT_GRAD_NORM} <= set(result["recorded_statistics"])  # recorded steps ran eagerly
    assert "watched x never watched" in format_result(result)


def test_findings_variant_writes_a_run_directory_and_runs_the_rules_at_each_flush(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    res = CliRunner().invoke(cli, ["bench", "overhead", "--model", "resnet8", "--steps", "2", "--repeats", "2",
                                   "--batch-size", "4", "--warmup", "0", "--device", "cpu", "--no-wandb",
                                   "--findings", "--flush-every", "2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = [line.split() for line in res.output.splitlines() if line.startswith("findings ")]
    assert len(rows) == 1 and float(rows[0][5]) > 0  # its x bare column
    assert "the rules run at each flush, every 2 recorded steps" in res.output
    checks = int(res.output.split("the rules ran ")[1].split()[0])
    assert checks >= 2  # 4 timed steps + 1 counted, a flush every 2
    assert "findings, mean step (the flushes and checks included):" in res.output
    assert not list(tmp_path.glob("gradlab-bench-findings-*"))  # its run directory is gone


def test_without_findings_the_bench_says_nothing_of_them():
    from gradlab.bench.overhead import format_result, run_overhead

    result = run_overhead("resnet8", batch_size=2, device="cpu", steps=1, repeats=1, warmup=0, with_wandb=False)
    assert "findings" not in result["variants"] and result["findings_checks"] is None
    assert "findings" not in format_result(result) and "mean step" not in format_result(result)


def test_a_zoo_case_may_name_its_activation_where_saturation_is_recorded():
    from gradlab.bench.overhead import run_overhead
    from gradlab.bench.overhead_cases import parse_cases

    assert parse_cases("plain20:sigmoid@2,resnet20:tanh", 8) == [("plain20:sigmoid@2", "plain20:sigmoid", 2),
                                                                  ("resnet20:tanh", "resnet20:tanh", 8)]  # fmt: skip
    rows = {stats: run_overhead("plain8:sigmoid", batch_size=2, device="cpu", steps=1, repeats=1, warmup=0,
                                with_wandb=False, stats=stats)["gradlab_rows"]
            for stats in (("act_mean",), ("act_mean", "act_sat_frac"))}  # fmt: skip
    assert rows[("act_mean", "act_sat_frac")] > rows[("act_mean",)] > 0  # one more statistic per point
    for bad in ("plain20:gelu", "transformer:tanh"):
        res = CliRunner().invoke(cli, ["bench", "overhead", "--model", bad, "--no-wandb"])
        assert res.exit_code == 1 and "one of relu, tanh, sigmoid" in res.output and "Traceback" not in res.output


def test_findings_without_a_flush_in_the_timed_steps_say_their_cost_is_not_measured():
    res = CliRunner().invoke(cli, ["bench", "overhead", "--model", "resnet8", "--steps", "1", "--repeats", "1",
                                   "--batch-size", "2", "--warmup", "0", "--device", "cpu", "--no-wandb",
                                   "--findings"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "no flush fell in the timed steps" in res.output and "a flush with its check costs" not in res.output


def test_the_flushes_cost_is_given_only_where_the_means_show_one():
    from gradlab.bench.overhead import _findings_mean_text

    def result(findings_ms):
        means = {"bare": 0.800, "gradlab": 0.860, "findings": findings_ms / 1e3}
        return {"variants": {k: {"mean_s": m} for k, m in means.items()}, "settings": {"flush_every": 64},
                "findings_checks": 2}  # fmt: skip

    costly = _findings_mean_text(result(870.0))
    assert "a flush with its check costs about 640 ms" in costly and "less than the noise" not in costly
    cheap = _findings_mean_text(result(850.0))  # below gradlab's mean: the noise, no cost to estimate
    assert "cost less than the noise between rounds" in cheap and "costs about" not in cheap
