"""Whole reports: files, fonts, resolution, damaged and unfinished runs, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib as mpl
import pytest
from PIL import Image

from gradlab import runs as R
from gradlab.file_io import write_json
from gradlab.report import ReportError, build_report
from gradlab.report import collect as C
from gradlab.report.figures_curves import curves_figure
from gradlab.report.style import depth_palette, get_style, theme

from gradlab.bench import synthetic_runs as F
from tests import damage as D

FIGURES = ("curves", "final_error", "gradient_flow_init", "gradient_flow_early", "gradient_flow_end",
           "gradient_heatmap", "layer_responses")  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """plain/ResNet-20/56 done, plain-110 diverged, a damaged spec and a truncated metrics file."""
    root = tmp_path_factory.mktemp("runs")
    F.make_run(root, "plain", 20, final_train_err=0.081, final_test_err=0.102)
    F.make_run(root, "plain", 56, final_train_err=0.123, final_test_err=0.141)
    F.make_run(root, "resnet", 20, final_train_err=0.060, final_test_err=0.085)
    F.make_run(root, "resnet", 56, final_train_err=0.041, final_test_err=0.071)
    F.make_run(root, "plain", 110, state=R.DIVERGED, upto=200, final_train_err=0.9, final_test_err=0.9,
               nonfinite={"step": 180, "layer": "fc.weight", "what": "loss"})  # fmt: skip
    bad_json = F.make_run(root, "resnet", 110, layers=False)
    D.break_json(bad_json / R.SPEC)
    bad_parquet = F.make_run(root, "resnet", 110, seed=1, layers=False)
    D.truncate_file(bad_parquet / R.METRICS)
    out = tmp_path_factory.mktemp("report") / "rep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # an unrelated file the report must leave alone
    before = dict(mpl.rcParams)
    result = build_report([root], out, workers=2)  # half the figures drawn by a forked child
    after = dict(mpl.rcParams)
    return {"result": result, "out": out, "bad": (bad_json, bad_parquet), "rc": (before, after)}


@pytest.mark.slow
def test_all_files_are_written(built):
    out, result = built["out"], built["result"]
    assert result.out_dir == out
    for name in FIGURES:
        for fmt in ("pdf", "png"):
            path = out / "figures" / f"{name}.{fmt}"
            assert path in result.files and path.stat().st_size > 1000, path
    for name in ("report.md", "table.md", "table.tex", "data/runs.csv", "data/final_by_model.csv"):
        assert (out / name) in result.files
    assert result.files[0] == out / "report.md"
    assert all(p.exists() for p in result.files)
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temp files
    assert (out / "notes.txt").read_text() == "mine"


def test_damaged_runs_are_named_and_the_rest_is_reported(built):
    warnings = " ".join(built["result"].warnings)
    bad_json, bad_parquet = built["bad"]
    assert str(bad_json) in warnings and "not valid JSON" in warnings
    assert str(bad_parquet) in warnings and "Parquet" in warnings
    md = (built["out"] / "report.md").read_text()
    assert "### Problems" in md and str(bad_json) in md and str(bad_parquet) in md


def test_report_md(built):
    md = (built["out"] / "report.md").read_text()
    assert md.startswith("# Degradation report: degradation-test")
    for name in FIGURES:
        assert f"](figures/{name}.png)" in md  # relative links
    assert "| `plain110-s0` | plain-110 | 0 | diverged @ step 180 | 200 / 400 |" in md
    assert "| `plain20-s0` | plain-20 | 0 | done | 400 / 400 | 8.10 | 10.20 |" in md
    # the diverged plain-110 is left out of the comparison and listed on its own
    assert ("plain-56 ends at 12.3% training error and plain-20 at 8.1%; with one seed each no noise estimate exists, "
            "so whether this is degradation is not judged.") in md
    assert "Not finished: plain-110 (diverged @ step 180)." in md
    assert "ResNet-56 ends at 4.1% training error and ResNet-20 at 6.0%" in md
    assert "from the last conv layer to the first" not in md  # a first-to-last ratio: the findings judge along depth
    assert "| plain-110† | 110 | 1.7M | 1 |" in md
    assert "[table.tex](table.tex)" in md


def test_pdf_fonts_are_embedded_truetype(built):
    for name in FIGURES:
        data = (built["out"] / "figures" / f"{name}.pdf").read_bytes()
        assert b"/FontFile2" in data, name  # TrueType font program embedded
        assert b"/Type3" not in data, name


def test_png_resolution_and_print_size(built):
    style = get_style("paper")
    for name, width_in in (("curves", style.full_width), ("final_error", style.single_width)):
        with Image.open(built["out"] / "figures" / f"{name}.png") as im:
            w, _h = im.size
            dpi = im.info.get("dpi", (0, 0))[0]
        assert w == round(width_in * style.dpi)
        assert w / width_in >= 200 and round(dpi) >= 200


def test_global_matplotlib_state_untouched(built):
    before, after = built["rc"]
    assert before == after
    assert mpl.rcParams["pdf.fonttype"] == before["pdf.fonttype"]


def test_legend_marks_unfinished_runs(tmp_path):
    F.make_run(tmp_path, "plain", 20, layers=False)
    F.make_run(tmp_path, "plain", 56, state=R.DIVERGED, upto=120, layers=False,
               nonfinite={"step": 100, "layer": "fc.weight", "what": "loss"})  # fmt: skip
    runs, _ = R.load_all(tmp_path)
    table = C.run_table(runs)
    with theme("paper") as st:
        fig = curves_figure(C.curves(runs), depth_palette(table["depth"]), C.model_notes(table), st)
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert "plain-56 (diverged @ step 100)" in labels and "plain-20" in labels


def test_no_layer_statistics_skips_those_figures_and_says_so(tmp_path):
    F.make_run(tmp_path / "runs", "plain", 20, layers=False)
    F.make_run(tmp_path / "runs", "resnet", 20, layers=False)
    result = build_report([tmp_path / "runs"], tmp_path / "out", formats="png", workers=1)
    names = {p.name for p in result.files}
    assert {"curves.png", "final_error.png"} <= names
    assert not any(n.startswith(("gradient_", "layer_responses")) for n in names)
    md = result.report.read_text()
    assert "layer recording was off" in md and "Skipped: gradient flow" in md
    assert any("no layer statistics" in w for w in result.warnings)


def test_out_dir_that_is_a_file_is_an_error(tmp_path):
    F.make_run(tmp_path / "runs", "plain", 20, layers=False)
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    with pytest.raises(ReportError, match="is an existing file"):
        build_report([tmp_path / "runs"], target)
    assert target.read_text() == "keep me"


def test_no_readable_run_is_an_error(tmp_path):
    bad = F.make_run(tmp_path / "runs", "plain", 20, layers=False)
    D.break_json(bad / R.SPEC)
    with pytest.raises(ReportError, match="no readable runs"):
        build_report([tmp_path / "runs"], tmp_path / "out")


def test_newer_format_is_named(tmp_path):
    F.make_run(tmp_path / "runs", "plain", 20, layers=False)
    newer = F.make_run(tmp_path / "runs", "plain", 56, layers=False)
    spec = json.loads((newer / R.SPEC).read_text())
    write_json(newer / R.SPEC, {**spec, "format_version": 99})
    result = build_report([tmp_path / "runs"], tmp_path / "out", formats="png", workers=1)
    assert any(str(newer) in w and "newer gradlab" in w for w in result.warnings)


def test_bad_options():
    with pytest.raises(ReportError, match="unknown figure format"):
        build_report([], "x", formats="pdf,jpeg")
    with pytest.raises(ReportError, match="unknown report style"):
        build_report([], "x", style="poster")


def test_default_out_dir_is_named_after_the_experiment(tmp_path, monkeypatch):
    F.make_run(tmp_path / "runs", "plain", 20, layers=False, experiment="my exp/1")
    monkeypatch.chdir(tmp_path)
    result = build_report([tmp_path / "runs"], formats="png", workers=1)
    assert result.out_dir == Path("reports") / "my-exp-1"
    assert (tmp_path / "reports" / "my-exp-1" / "report.md").exists()


def test_report_side_never_imports_torch(tmp_path):
    runs = tmp_path / "runs"
    F.make_run(runs, "plain", 20, n_records=8)  # layer statistics: read and collected below
    F.make_run(runs, "resnet", 20, layers=False)
    code = textwrap.dedent(
        f"""
        import sys
        from gradlab.cli.main import cli
        from gradlab.report import layer_frames as collect
        from gradlab import runs as R
        runs, _ = R.load_all({str(runs)!r})
        data = collect.load_layer_data(runs)
        assert not collect.gradient_flow(runs, data).empty and not collect.responses(runs, data).empty
        cli.main(["report", {str(runs / "degradation-test" / "resnet20-s0")!r}, "--out", {str(tmp_path / "out")!r},
                  "--formats", "png", "--style", "notebook"], standalone_mode=False)
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "gradlab.models", "gradlab.probes", "gradlab.recorder", "gradlab.analyses")))
        assert not bad, bad
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "ok"
    assert (tmp_path / "out" / "figures" / "curves.png").exists()


def _die(*_args):
    os._exit(3)  # a drawing child that dies without a word


def test_figures_of_a_failed_drawing_child_are_drawn_by_the_parent(tmp_path, monkeypatch):
    import gradlab.report.render as B

    F.make_run(tmp_path / "runs", "plain", 20, layers=False)
    F.make_run(tmp_path / "runs", "resnet", 20, layers=False)
    monkeypatch.setattr(B, "_child", _die)
    result = build_report([tmp_path / "runs"], tmp_path / "out", formats="png", workers=2)
    names = {p.name for p in result.files}
    assert {"curves.png", "final_error.png"} <= names
    assert all(p.exists() for p in result.files)
