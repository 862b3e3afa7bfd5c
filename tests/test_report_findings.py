"""report.md starts with the findings (gradlab.findings) of the runs it reports: grouped by
severity, each naming its rule, run, layers and steps, and linking to the figure file that
shows it (or saying that none was drawn); a healthy run's report says there are none;
--set and --thresholds reach them through `gradlab report`; data/findings.csv and .json
hold them. Hand-made runs with known values: tests/findings_runs.py."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gradlab import stat_names as S
from gradlab.cli.main import cli
from gradlab.findings import RULES, default_settings
from gradlab.report import build_report
from tests.findings_runs import along_depth, write_run
from tests.test_findings_rules import healthy

VANISHING = ("- **vanishing_gradients** — `bad` — l0 (#0), l1 (#1), l2 (#2) — steps 0–29: ||dL/dh|| shrinks 128x "
             "from the output end to the input end of the 8 comparable layers. Theil–Sen trend of log ||dL/dh|| over "
             "depth: 128x at step 0")  # fmt: skip


def pathology_runs(root):
    """ok: healthy; bad: ||dL/dh|| shrinks 128x towards the input (a warning); worse: 10**7x
    (an error) and l4's units dead (an error whose figure, activations, is not drawn: no
    act_std recorded); gated: three weights with no gradient at the first step (info)."""
    stats, loss = healthy()
    write_run(root, "ok", stats, loss)
    write_run(root, "bad", {**stats, S.ACT_GRAD_NORM: along_depth(2.0, n_steps=30)}, loss)
    dead = stats[S.ACT_DEAD_FRAC].copy()
    dead[10:, 4] = 0.95
    write_run(root, "worse", {**stats, S.ACT_GRAD_NORM: along_depth(10.0, n_steps=30), S.ACT_DEAD_FRAC: dead}, loss)
    grads = stats[S.GRAD_NORM].copy()
    grads[0, 5:] = 0.0
    write_run(root, "gated", {**stats, S.GRAD_NORM: grads}, loss)
    return root


def findings_section(md: str) -> str:
    return md[md.index("## Findings"):md.index("## Summary")]


SHOWN = ("vanishing_gradients", "dead_units", "zero_gradients")  # the rules these runs are made for


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of pathology_runs with the rules they are made for (others come and go)."""
    root = pathology_runs(tmp_path_factory.mktemp("runs"))
    out = tmp_path_factory.mktemp("report") / "rep"
    settings = default_settings()
    for rule in set(RULES) - set(SHOWN):
        settings.set(rule, "enabled", False, "test")
    result = build_report([root], out, formats="png", workers=1, findings_settings=settings)
    return result, out, (out / "report.md").read_text(encoding="utf-8")


def test_report_md_starts_with_the_findings_by_severity(report):
    result, out, md = report
    title, context, first = [block for block in md.split("\n\n")][:3]
    assert title.startswith("# Training report: runs") and context.startswith("4 runs; experiment runs")
    assert first == "## Findings"
    section = findings_section(md)
    assert section.index("### Errors") < section.index("### Warnings") < section.index("### Info")
    off = ", ".join(sorted(set(RULES) - set(SHOWN)))
    assert f"4 findings in 4 runs (2 error, 1 warning, 1 info), from every rule switched on (3 of {len(RULES)}; off: {off})" in section
    assert VANISHING in section and "Try: normalize (BatchNorm, LayerNorm)" in section
    errors = section[section.index("### Errors"):section.index("### Warnings")]
    assert "**vanishing_gradients** — `worse` — l0 (#0), l1 (#1), l2 (#2) — steps 0–29: " in errors
    assert "**dead_units** — `worse` — l4 (#4) — steps 10–29: " in errors
    info = section[section.index("### Info"):]
    assert "**zero_gradients** — `gated` — l5.weight (#5), l6.weight (#6), l7.weight (#7) — step 0: " in info
    assert "`ok`" not in section  # the healthy run is named nowhere in the findings
    assert [(f.rule, f.run) for f in result.findings] == [("vanishing_gradients", "worse"), ("dead_units", "worse"),
                                                          ("vanishing_gradients", "bad"), ("zero_gradients", "gated")]


def test_every_finding_links_to_a_figure_file_that_exists_or_says_none_was_drawn(report):
    _, out, md = report
    lines = [line for line in findings_section(md).splitlines() if line.startswith("- **")]
    assert len(lines) == 4
    links = {}
    for line in lines:
        rule = line.split("**")[1]
        found = re.search(r"\(\[figure: ([^]]+)\]\(([^)]+)\)\)$", line)
        if found:
            assert (out / found[2]).is_file(), found[2]
            links[rule] = found[2]
        else:
            assert line.endswith("(no figure drawn: this report has no activations figure)") and rule == "dead_units"
    # the gradient flow at the phase of the worst step (step 0: init); the heatmap for a blocked path
    assert links == {"vanishing_gradients": "figures/gradient_flow_init.png", "zero_gradients": "figures/gradient_heatmap.png"}
    assert "[figure: Gradient flow, init (step 0)](figures/gradient_flow_init.png)" in md


def test_the_summary_no_longer_says_what_the_findings_say(report):
    """The first-to-last ratios of other models and the exactly-0 sentences are gone from the
    summary (issue #28): the findings say it per run, with a robust trend."""
    result, _, md = report
    for gone in ("from the last layer to the first", "exactly 0 at", "no first-to-last ratio"):
        assert gone not in md and not any(gone in s for s in result.summary)
    assert result.summary == ["No run has evaluated yet: there are no final errors to compare."]


def test_data_holds_the_findings_as_csv_and_json(report):
    result, out, _ = report
    table = pd.read_csv(out / "data" / "findings.csv", dtype=str, keep_default_na=False)
    assert list(table.columns) == ["severity", "rule", "run", "layers", "positions", "first_step", "last_step", "when",
                                   "summary", "evidence", "explanation", "suggestion", "figure", "figure_file"]
    assert len(table) == 4 and list(table["run"]) == ["worse", "worse", "bad", "gated"]
    bad = table[table["run"] == "bad"].iloc[0].to_dict()
    assert {k: bad[k] for k in ("severity", "rule", "layers", "positions", "first_step", "last_step", "when")} == {
        "severity": "warning", "rule": "vanishing_gradients", "layers": "l0;l1;l2", "positions": "0;1;2",
        "first_step": "0", "last_step": "29", "when": "steps 0–29"}  # fmt: skip
    assert table[table["run"] == "gated"].iloc[0]["last_step"] == ""  # a finding of one step has no range
    assert (bad["figure"], bad["figure_file"]) == ("gradient_flow", "figures/gradient_flow_init.png")
    assert table[table["rule"] == "dead_units"].iloc[0]["figure_file"] == ""
    records = json.loads((out / "data" / "findings.json").read_text(encoding="utf-8"))
    assert [r["run"] for r in records] == ["worse", "worse", "bad", "gated"]
    assert records[2]["where"][0] == {"layer": "l0", "position": 0} and records[2]["extra"]["factor"] == 128.0
    assert {out / "data" / "findings.csv", out / "data" / "findings.json"} <= set(result.files)


def test_a_healthy_run_has_no_findings(tmp_path):
    write_run(tmp_path / "runs", "ok", *healthy())
    result = build_report([tmp_path / "runs"], tmp_path / "rep", formats="png", workers=1)
    md = result.report.read_text(encoding="utf-8")
    assert f"## Findings\n\nNo findings: every rule ({len(RULES)}) is silent on these runs.\n\n## Summary" in md
    assert "### Warnings" not in md and "### Errors" not in md and result.findings == []
    table = pd.read_csv(tmp_path / "rep" / "data" / "findings.csv")
    assert table.empty and "rule" in table.columns
    assert json.loads((tmp_path / "rep" / "data" / "findings.json").read_text()) == []


def test_runs_of_the_same_name_are_named_as_the_report_names_them(tmp_path):
    stats, loss = healthy()
    for experiment in ("a", "b"):
        write_run(tmp_path / experiment, "bad", {**stats, S.ACT_GRAD_NORM: along_depth(2.0, n_steps=30)}, loss)
    result = build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "rep", formats="svg", workers=1)
    assert sorted(f.run for f in result.findings) == ["a/bad", "b/bad"]
    md = result.report.read_text(encoding="utf-8")
    assert "— `a/bad` —" in md and "| `a/bad` |" in md  # the findings and the runs table agree
    assert "(figures/gradient_flow_init.svg))" in md  # the file written: no PNG asked for


def report_cli(*args):
    return CliRunner().invoke(cli, ["report", *map(str, args)])


def test_set_and_thresholds_reach_the_findings_through_the_cli(tmp_path):
    stats, loss = healthy()
    runs = tmp_path / "runs"
    write_run(runs, "bad", {**stats, S.ACT_GRAD_NORM: along_depth(2.0, n_steps=30)}, loss)
    out = tmp_path / "rep"

    result = report_cli(runs, "--out", out, "--formats", "png")
    assert result.exit_code == 0, result.output
    assert "findings (at the top of report.md): 1 warning" in result.output
    assert "  WARNING vanishing_gradients in bad, steps 0–29: ||dL/dh|| shrinks 128x" in result.output
    assert "### Warnings\n\n- **vanishing_gradients** — `bad`" in (out / "report.md").read_text(encoding="utf-8")

    result = report_cli(runs, "--out", out, "--formats", "png", "--set", "vanishing_gradients.warning=1000")
    assert result.exit_code == 0, result.output
    assert "findings: none" in result.output
    md = (out / "report.md").read_text(encoding="utf-8")
    assert (f"No findings: every rule ({len(RULES)}) is silent on these runs. Thresholds changed from their defaults: "
            "vanishing_gradients.warning=1000.") in md  # fmt: skip
    assert len(pd.read_csv(out / "data" / "findings.csv")) == 0

    result = report_cli(runs, "--out", out, "--formats", "png", "--set", "vanishing_gradients.error=50")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "### Errors\n\n- **vanishing_gradients** — `bad`" in md and "### Warnings" not in md
    assert "Thresholds changed from their defaults: vanishing_gradients.error=50." in md

    toml = tmp_path / "rules.toml"
    toml.write_text("[vanishing_gradients]\nenabled = false\n")
    result = report_cli(runs, "--out", out, "--formats", "png", "--thresholds", toml)
    assert result.exit_code == 0, result.output
    assert (f"No findings: every rule switched on ({len(RULES) - 1} of {len(RULES)}; off: vanishing_gradients) is silent "
            "on these runs."
            in (out / "report.md").read_text(encoding="utf-8"))  # fmt: skip


def test_a_wrong_set_fails_before_any_report_is_written(tmp_path):
    write_run(tmp_path / "runs", "ok", *healthy())
    result = report_cli(tmp_path / "runs", "--out", tmp_path / "rep", "--set", "vanishing_gradients.nope=1")
    assert result.exit_code != 0 and "rule vanishing_gradients has no threshold 'nope'" in result.output
    assert not (tmp_path / "rep").exists()


def test_the_report_and_check_share_one_declaration_of_the_options():
    from gradlab.cli.check_cmd import check
    from gradlab.cli.report_cmd import report as report_command

    def described(command):
        return {p.name: (p.opts, p.help, p.multiple) for p in command.params if p.name in ("overrides", "thresholds")}

    assert described(check) == described(report_command) and len(described(check)) == 2


def test_a_finding_without_its_figure_says_why(tmp_path):
    """A run of someone's loop logs a loss, no errors: a loss spike's "curves" are its logged
    scalars; and a report asked for PDF alone links the PDF."""
    stats, loss = healthy()
    loss = loss.copy()
    loss[17] *= 1e3
    write_run(tmp_path / "runs", "spiky", stats, loss)
    result = build_report([tmp_path / "runs"], tmp_path / "rep", formats="pdf", workers=1)
    (spike,) = [f for f in result.findings if f.rule == "loss_spike"]
    md = result.report.read_text(encoding="utf-8")
    assert "**loss_spike** — `spiky` — step 17: " in md
    assert "([figure: Logged scalars](figures/scalars.pdf))" in md and (tmp_path / "rep" / "figures" / "scalars.pdf").is_file()
    assert np.isfinite(spike.first_step)


def test_a_run_the_rules_could_not_read_is_named_and_one_without_layers_is_checked(tmp_path):
    """A run without layer statistics is checked on what it has (its loss, its errors); one
    whose layer table is damaged is named as not checked, never called healthy."""
    from gradlab.bench import synthetic_runs as F
    from tests.damage import truncate_file

    write_run(tmp_path / "runs", "ok", *healthy())
    F.make_run(tmp_path / "runs", "plain", 20, layers=False)
    result = build_report([tmp_path / "runs"], tmp_path / "rep", formats="png", workers=1)
    md = result.report.read_text(encoding="utf-8")
    assert f"No findings: every rule ({len(RULES)}) is silent on these runs." in md and "Not checked" not in md
    damaged = F.make_run(tmp_path / "runs", "resnet", 20)
    truncate_file(damaged / "layers.parquet")
    result = build_report([tmp_path / "runs"], tmp_path / "rep2", formats="png", workers=1)
    md = result.report.read_text(encoding="utf-8")
    assert f"Not checked: `{damaged.name}` (its layer statistics cannot be read)." in md
