"""The options several commands share (gradlab.cli.shared_options): one declaration, one
parser, one error text wherever they appear."""

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from gradlab.cli.main import cli
from gradlab.cli.shared_options import FigureFormats, formats_option, norm_act_options, style_option

# one command of each kind that takes --formats; each fails while parsing, before any work
COMMANDS = {
    "compare": ["compare", "--preset", "quick", "--out", "{out}"],
    "report": ["report", "runs", "--out", "{out}"],
    "analyze": ["analyze", "gradients", "--out", "{out}"],
    "lesion": ["lesion", "runs", "--out", "{out}"],
    "bench report": ["bench", "report"],
}


def error_lines(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None)))
    return [line for line in result.output.splitlines() if "Error" in line]


def test_a_bad_format_is_one_line_with_the_same_text_in_every_command(tmp_path):
    seen = set()
    for name, args in COMMANDS.items():
        lines = error_lines([a.format(out=tmp_path / name) for a in args] + ["--formats", "png,gif"])
        assert len(lines) == 1, (name, lines)
        seen.add(lines[0])
        assert not (tmp_path / name).exists()
    assert seen == {"Error: Invalid value for '--formats': unknown figure format 'gif'; choose from pdf, png, svg, "
                    "comma-separated (e.g. --formats pdf,png)"}


@pytest.mark.parametrize("value", ["pdf,,png", "png,", ",", ""])
def test_an_empty_item_or_list_is_refused(value, tmp_path):
    for args in (COMMANDS["report"], COMMANDS["compare"]):
        lines = error_lines([a.format(out=tmp_path / "out") for a in args] + ["--formats", value])
        assert len(lines) == 1 and "choose from pdf, png, svg" in lines[0], lines
        assert "empty item" in lines[0] or "no figure format given" in lines[0], lines


def _echo_command():
    @click.command()
    @formats_option
    @style_option
    @norm_act_options
    def echo(formats, style, norm, act):
        click.echo(repr((formats, style, norm, act)))

    return echo


def test_a_valid_list_passes_through_as_a_tuple():
    from gradlab.report.files import DEFAULT_FORMATS

    run = CliRunner().invoke
    assert run(_echo_command(), []).output.strip() == repr((DEFAULT_FORMATS, "paper", None, None))
    assert run(_echo_command(), ["--formats", "svg,png"]).output.strip() == repr((("svg", "png"), "paper", None, None))
    result = run(_echo_command(), ["--formats", "png", "--style", "notebook", "--norm", "none", "--act", "tanh"])
    assert result.output.strip() == repr((("png",), "notebook", "none", "tanh"))
    # what the report side's parse_formats accepted stays accepted
    assert FigureFormats().convert(" PNG, .svg ,png", None, None) == ("png", "svg")


def test_the_commands_get_the_parsed_formats(monkeypatch, tmp_path):
    import gradlab.bench.report_bench
    import gradlab.report.build

    got = {}

    def fake_build(runs, out, formats, style, **options):  # (findings_settings, ...)
        got["report"] = (formats, style)
        raise SystemExit(0)

    monkeypatch.setattr(gradlab.report.build, "build_report", fake_build)
    CliRunner().invoke(cli, ["report", str(tmp_path), "--formats", "svg,pdf", "--style", "notebook"])
    assert got["report"] == (("svg", "pdf"), "notebook")
    def fake_bench(repeats, formats):
        got["bench"] = formats
        raise SystemExit(0)

    monkeypatch.setattr(gradlab.bench.report_bench, "run_report_bench", fake_bench)
    CliRunner().invoke(cli, ["bench", "report", "--formats", "png,svg"])
    assert got["bench"] == "png,svg"  # the benchmark's child process still gets the text


def test_the_valid_values_are_the_report_sides_and_the_models():
    from gradlab.models.options import ACTS, NORMS
    from gradlab.report.files import SUPPORTED_FORMATS
    from gradlab.report.style import STYLES

    params = {p.name: p for p in _echo_command().params}
    assert params["style"].type.choices == STYLES
    assert params["formats"].type.get_metavar(params["formats"]) == f"[{'|'.join(SUPPORTED_FORMATS)}],..."
    assert params["norm"].type.choices == NORMS and params["act"].type.choices == ACTS


def test_each_shared_option_is_declared_once():
    from pathlib import Path

    import gradlab.cli

    for path in Path(gradlab.cli.__file__).parent.glob("*.py"):
        if path.name == "shared_options.py":
            continue
        text = path.read_text(encoding="utf-8")
        for option in ('"--formats"', '"--style"', '"--norm"', '"--act"'):
            assert option not in text, f"{path.name} declares {option}; use gradlab.cli.shared_options"


def imported(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {m.split(".")[0] for m in out.stdout.split()}


def test_report_imports_no_torch_and_bench_no_report_side():
    assert "torch" not in imported("gradlab.cli.report_cmd")
    assert not imported("gradlab.cli.bench_cmd") & {"torch", "pandas", "matplotlib"}  # `gradlab bench -h` is quick
