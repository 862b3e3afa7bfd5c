"""docs/findings.md holds the rules' table as the code declares it."""

from pathlib import Path

from gradlab.findings.table import rules_markdown


def test_the_rules_table_in_the_docs_is_the_codes():
    text = (Path(__file__).parent.parent / "docs" / "findings.md").read_text(encoding="utf-8")
    assert text.endswith(rules_markdown()), "regenerate the table: gradlab.findings.table.rules_markdown()"
