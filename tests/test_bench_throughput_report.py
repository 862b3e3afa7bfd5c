"""The throughput and report benchmarks run and report their figures (never asserted on)."""

import json

import pytest
from click.testing import CliRunner

from gradlab.bench.report_bench import run_report_bench
from gradlab.bench.throughput import bench_spec, run_throughput
from gradlab.cli.main import cli
from gradlab.config import DataSpec
from gradlab.errors import ConfigError


def test_throughput_measures_both_loops():
    result = run_throughput(models=("resnet8",), batch_size=16, steps=1, repeats=1, device="cpu", workers=0,
                            images=160)
    entry = result["results"]["resnet8"]
    assert entry["gradlab"]["images_per_s"] > 0 and entry["reference"]["images_per_s"] > 0
    assert entry["ratio"] == entry["gradlab"]["images_per_s"] / entry["reference"]["images_per_s"]
    assert result["environment"]["device"] == "cpu" and result["settings"]["batch_size"] == 16
    assert result["settings"]["compile"] is False and result["settings"]["compile_mode"] is None
    assert "gradlab-compiled" not in entry


def test_bench_spec_takes_the_compile_mode_and_the_data():
    data = DataSpec(name="synthetic", synthetic_size=64)
    spec = bench_spec("resnet8", data, 16, "cpu", compile_mode="reduce-overhead")
    assert spec.compile and spec.compile_mode == "reduce-overhead" and spec.data == data
    assert not spec.recipe.record and spec.recipe.batch_size == 16
    plain = bench_spec("resnet8", data, 16, "cpu", compile=True)
    assert plain.compile and plain.compile_mode == "default"
    with pytest.raises(ConfigError, match="reduce-overhead"):
        bench_spec("resnet8", data, 16, "cpu", compile_mode="fastest")


@pytest.mark.slow
def test_throughput_cli_compile_mode_names_the_mode(tmp_path):
    out = tmp_path / "t.json"
    result = CliRunner().invoke(cli, ["bench", "throughput", "--models", "resnet8", "--batch-size", "16", "--steps", "1",
                                      "--repeats", "1", "--workers", "0", "--device", "cpu",
                                      "--compile-mode", "reduce-overhead", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["settings"]["compile"] is True and data["settings"]["compile_mode"] == "reduce-overhead"
    compiled = data["results"]["resnet8"]["gradlab-compiled"]
    assert compiled["images_per_s"] > 0 and compiled["compile_s"] >= 0
    assert "torch.compile mode reduce-overhead" in result.output


@pytest.mark.slow
def test_report_bench_builds_in_a_fresh_process():
    result = run_report_bench(repeats=1, formats="png", steps=400, depths=(8,))
    assert result["settings"]["runs"] == 2 and result["results"]["median_s"] > 0
    assert result["results"]["peak_rss_mb"] > 0 and result["results"]["trials"][0]["files"] > 0


def test_throughput_cli_rejects_unknown_model():
    out = CliRunner().invoke(cli, ["bench", "throughput", "--models", "resnet21"])
    assert out.exit_code != 0 and "6n+2" in out.output and "Traceback" not in out.output
