"""The throughput and report benchmarks run and report their figures (never asserted on)."""

from click.testing import CliRunner

from gradlab.bench.report_bench import run_report_bench
from gradlab.bench.throughput import run_throughput
from gradlab.cli.main import cli


def test_throughput_measures_both_loops():
    result = run_throughput(models=("resnet8",), batch_size=16, steps=1, repeats=1, device="cpu", workers=0,
                            images=160)
    entry = result["results"]["resnet8"]
    assert entry["gradlab"]["images_per_s"] > 0 and entry["reference"]["images_per_s"] > 0
    assert entry["ratio"] == entry["gradlab"]["images_per_s"] / entry["reference"]["images_per_s"]
    assert result["environment"]["device"] == "cpu" and result["settings"]["batch_size"] == 16


def test_report_bench_builds_in_a_fresh_process():
    result = run_report_bench(repeats=1, formats="png", steps=400, depths=(8,))
    assert result["settings"]["runs"] == 2 and result["results"]["median_s"] > 0
    assert result["results"]["peak_rss_mb"] > 0 and result["results"]["trials"][0]["files"] > 0


def test_throughput_cli_rejects_unknown_model():
    out = CliRunner().invoke(cli, ["bench", "throughput", "--models", "resnet21"])
    assert out.exit_code != 0 and "6n+2" in out.output and "Traceback" not in out.output
