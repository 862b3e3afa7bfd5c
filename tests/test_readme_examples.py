"""The README's own-loop example runs as written (shortened to 50 steps) and `gradlab report`
draws what it wrote: the code a new user copies stays true."""

import re
from pathlib import Path

import pytest

from gradlab import runs
from gradlab.report import build_report

README = Path(__file__).resolve().parent.parent / "README.md"


def example(after: str) -> str:
    """The first ```python block after the line containing ``after``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(after)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, f"no python block after {after!r}"
    return match.group(1)


@pytest.mark.filterwarnings("ignore:gradlab.*did not run as a module:RuntimeWarning")  # out_proj: expected
@pytest.mark.slow
def test_the_transformer_example_runs_and_its_report_draws(tmp_path, monkeypatch):
    code = example("Save it as `transformer_digits.py`")
    assert code.count("range(400)") == 1
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("range(400)", "range(50)"), "transformer_digits.py", "exec"), {"__name__": "__main__"})
    for name in ("post-LN", "pre-LN"):
        run = runs.read_run(tmp_path / "runs" / "transformer" / name)
        assert run.state == runs.DONE and run.spec["config"]["depth"] == 12
    result = build_report([tmp_path / "runs" / "transformer"], tmp_path / "report", formats="png", workers=1)
    drawn = {p.stem for p in result.files}
    assert {"gradient_flow_end", "gradient_heatmap", "activations", "scalars"} <= drawn
