"""docs/cli.md is what gradlab.cli.reference renders from the commands now, and every
command's help carries an example (after simonw/sqlite-utils' tests/test_docs.py)."""

from pathlib import Path

import click

from gradlab.cli import reference

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def test_docs_cli_md_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == reference.render(), (
        f"docs/cli.md is stale: the commands' help changed; regenerate it with `{reference.REGENERATE}`"
    )


def test_the_reference_holds_every_visible_command_and_no_hidden_one():
    paths = [ctx.command_path for ctx in reference.contexts()]
    assert paths[:2] == ["gradlab", "gradlab models"]
    assert {"gradlab analyze", "gradlab analyze gradients", "gradlab analyze spp", "gradlab analyze shattering",
            "gradlab bench", "gradlab bench report", "gradlab lesion"} <= set(paths)
    assert not [p for p in paths if p.split()[1:2] == ["probe"]]  # the old name of analyze
    assert len(paths) == len(set(paths))


def test_every_group_and_subcommand_help_has_an_example():
    # The top-level commands are checked by tests/test_config.py::test_every_command_help_has_examples,
    # which leaves out the groups' subcommands and bench; here: every group and everything in one.
    nested = [ctx for ctx in reference.contexts() if ctx.parent is not None
              and (ctx.parent.parent is not None or isinstance(ctx.command, click.Group))]
    assert {ctx.command_path for ctx in nested} >= {"gradlab analyze", "gradlab analyze spp", "gradlab bench",
                                                    "gradlab bench report"}
    missing = [ctx.command_path for ctx in nested if "Example" not in reference.help_text(ctx)]
    assert not missing, f"no Example in the help of: {', '.join(missing)}"
