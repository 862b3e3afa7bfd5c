"""Analysis folders in `gradlab report` (no torch: folders written from hand-made tables)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from gradlab import stat_names as S
from gradlab.analysis_dirs import ANALYSIS, write_analysis
from gradlab.bench import synthetic_runs as F
from gradlab.cli.main import cli
from gradlab.report import analyses as A
from gradlab.report.build import ReportError, build_report


def gradients_folder(path, plain_ratio=1000.0, resnet_ratio=5.0):
    """A probe-gradients folder for plain/ResNet-20 and -56 whose first/last ratios are known."""
    rows, ratios = [], []
    for family, ratio56 in (("plain", plain_ratio), ("resnet", resnet_ratio)):
        for depth, ratio in ((20, 3.0), (56, ratio56)):
            convs = depth - 1  # then the classifier at position `depth`
            for stat in (S.GRAD_NORM, S.ACT_GRAD_NORM):
                for pos in range(1, convs + 1):  # geometric decay from `ratio` to 1 along the convs
                    value = ratio ** ((convs - pos) / (convs - 1))
                    rows.append({"family": family, "depth": depth, "model": f"{family}{depth}", "stat": stat,
                                 "position": pos, "kind": "conv", "layer": f"c{pos}", "n": 1, "value": value})
                if stat == S.GRAD_NORM:
                    rows.append({"family": family, "depth": depth, "model": f"{family}{depth}", "stat": stat,
                                 "position": depth, "kind": "fc", "layer": "fc", "n": 1, "value": 0.1})
                ratios.append({"family": family, "depth": depth, "model": f"{family}{depth}", "stat": stat,
                               "first": ratio, "last": 1.0, "ratio": ratio})
    by_model = pd.DataFrame(rows)
    settings = {"depths": [20, 56], "seeds": [0], "batch_size": 64, "dataset": "digits", "inputs": "real"}
    return write_analysis(path, "probe-gradients", settings,
                          {"by_model": by_model, "ratios": pd.DataFrame(ratios)})  # fmt: skip


def spp_folder(path):
    rows = []
    for family in ("plain", "resnet"):
        for block in range(1, 10):
            stage = (block - 1) // 3 + 1
            var = 0.35 if family == "plain" else 0.7 + 0.4 * ((block - 1) % 3)
            for stat, value in (("avg_channel_sq_mean", var / 2), ("avg_channel_var", var),
                                ("branch_avg_channel_var", 1.0)):
                rows.append({"family": family, "depth": 20, "model": f"{family}20", "block": block,
                             "layer": f"layer{stage}.{(block - 1) % 3}", "stage": stage, "stat": stat,
                             "n": 1, "value": value})
    settings = {"depths": [20], "seeds": [0], "batch_size": 128, "dataset": "digits", "inputs": "gaussian"}
    return write_analysis(path, "probe-spp", settings, {"by_model": pd.DataFrame(rows)})


def test_draw_analysis_writes_the_folders_own_figures(tmp_path):
    folder = gradients_folder(tmp_path / "grad")
    files = A.draw_analysis(folder, formats="png,pdf")
    assert files == [folder / "figures" / "probe-gradients.png", folder / "figures" / "probe-gradients.pdf"]
    assert all(f.stat().st_size > 1000 for f in files)
    files = A.draw_analysis(spp_folder(tmp_path / "spp"), formats=("svg",), style="notebook")
    assert [f.name for f in files] == ["probe-spp.svg"]
    with pytest.raises(ReportError, match="unknown figure format"):
        A.draw_analysis(folder, formats="gif")


def test_sentences_state_the_measured_ratios(tmp_path):
    sentences = A.analysis_sentences(gradients_folder(tmp_path / "grad"))
    assert len(sentences) == 2
    assert "grows 1,000× (exploding towards the input) in plain-56" in sentences[0]
    assert "grows 5× (exploding towards the input) in ResNet-56" in sentences[0]
    assert "‖∂L/∂W‖" in sentences[0] and "‖∂L/∂h‖" in sentences[1]
    # an overflowed model has no ratio: named, and the comparison falls back to a finite depth
    overflow = A.analysis_sentences(gradients_folder(tmp_path / "inf", plain_ratio=float("inf")))
    assert "grows 3× (exploding towards the input) in plain-20" in overflow[0] and "ResNet-20" in overflow[0]
    assert "was not finite at init (beyond float32's range) in plain-56" in overflow[1]
    spp = A.analysis_sentences(spp_folder(tmp_path / "spp"))
    assert spp and "0.35 → 0.35 in plain-20" in spp[0] and "0.70 → 1.50 in ResNet-20" in spp[0]


def test_report_of_analysis_folders_alone(tmp_path):
    gradients_folder(tmp_path / "probes" / "gradients-digits")
    spp_folder(tmp_path / "probes" / "spp-gaussian")
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "probes"), "--out", str(out), "--formats", "png"])
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text()
    assert "## Analyses" in md and "## Runs" not in md
    assert "![Gradient norms at initialization" in md and "](figures/analysis_gradients-digits.png)" in md
    assert "![Signal propagation plots" in md and "](figures/analysis_spp-gaussian.png)" in md
    assert "grows 1,000×" in md and "grows 1,000×" in result.output
    assert (out / "figures" / "analysis_spp-gaussian.png").is_file()
    assert "no run directory found" not in result.output


def test_report_with_runs_and_analyses_keeps_both(tmp_path):
    runs = tmp_path / "runs"
    F.make_run(runs, "plain", 20, layers=False)
    F.make_run(runs, "resnet", 20, layers=False)
    gradients_folder(runs / "probes" / "gradients-digits")  # found inside the runs folder too
    result = build_report([runs], tmp_path / "out", formats="png", workers=1)
    md = result.report.read_text()
    assert md.index("## Figures") < md.index("## Table") < md.index("## Analyses")
    assert (tmp_path / "out" / "figures" / "curves.png").is_file()
    assert (tmp_path / "out" / "figures" / "analysis_gradients-digits.png").is_file()
    assert any("plain-56" in s for s in result.summary)
    assert not any("probes" in w for w in result.warnings)


def test_report_walks_each_given_folder_once(tmp_path, monkeypatch):
    from pathlib import Path

    runs = tmp_path / "runs"
    F.make_run(runs, "plain", 20, layers=False)
    F.make_run(runs, "resnet", 20, layers=False)
    gradients_folder(runs / "probes" / "gradients-digits")
    walked = []
    rglob = Path.rglob

    def counted(self, *args, **kwargs):
        walked.append(self)
        return rglob(self, *args, **kwargs)

    monkeypatch.setattr(Path, "rglob", counted)
    result = build_report([runs], tmp_path / "out", formats="png", workers=1)
    assert walked == [runs]  # runs and analysis folders found in the same walk
    assert "## Runs" in result.report.read_text() and "## Analyses" in result.report.read_text()


def test_damaged_and_undrawable_folders_are_warnings(tmp_path, monkeypatch):
    good = gradients_folder(tmp_path / "a" / "good")
    bad_json = spp_folder(tmp_path / "a" / "bad-json")
    (bad_json / ANALYSIS).write_text("{ not json")
    not_utf8 = spp_folder(tmp_path / "a" / "not-utf8")
    (not_utf8 / ANALYSIS).write_bytes(b'\xff\xfe{"kind": "probe-spp"}')  # once a traceback
    no_table = spp_folder(tmp_path / "a" / "no-table")
    (no_table / "by_model.parquet").unlink()
    no_column = write_analysis(tmp_path / "a" / "no-column", "probe-spp", {},
                               {"by_model": pd.DataFrame({"family": ["plain"], "value": [1.0]})})  # fmt: skip
    lesion = write_analysis(tmp_path / "a" / "lesion", "lesion", {}, {"t": pd.DataFrame({"x": [1]})})
    monkeypatch.delitem(A.FIGURE_MODULES, "lesion")
    entries, warnings = A.load_analyses([tmp_path / "a"])
    assert [e.analysis.path for e in entries] == [good]
    text = "\n".join(warnings)
    assert f"unreadable analysis {bad_json}" in text and "not valid JSON" in text
    assert f"unreadable analysis {not_utf8}" in text and "not UTF-8 text" in text
    assert f"{no_table} lacks by_model.parquet" in text
    assert "lacks column(s) depth, block, stage, stat" in text and str(no_column) in text
    assert f"analysis {lesion} (lesion) skipped" in text and "no figure for that kind" in text
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "a"), "--out", str(out), "--formats", "png"])
    assert result.exit_code == 0, result.output
    assert "warning: unreadable analysis" in result.output and "Traceback" not in result.output
    assert "### Problems" in (out / "report.md").read_text()


def test_only_damaged_analyses_fail_clearly(tmp_path):
    bad = spp_folder(tmp_path / "bad")
    (bad / "by_model.parquet").write_bytes(b"not parquet")
    result = CliRunner().invoke(cli, ["report", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "no readable runs" in result.output and "cannot be read as Parquet" in result.output


def test_report_side_does_not_import_torch():
    code = ("import sys; import gradlab.report.analyses, gradlab.report.figures_init_gradients, "
            "gradlab.report.figures_spp; print('torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
