"""The CLI reference (docs/cli.md): every command's `--help`, rendered from the click commands.

    python -m gradlab.cli.reference                       # print it
    python -m gradlab.cli.reference --write docs/cli.md   # regenerate the file

tests/test_cli_reference.py fails while docs/cli.md differs from what this renders. Help is
laid out at a fixed width, so the text does not depend on the terminal; hidden commands (old
names such as `gradlab probe`) are left out.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import click

WIDTH = 100  # the CLI's own max_content_width (gradlab.cli.main.CONTEXT_SETTINGS)
REGENERATE = "python -m gradlab.cli.reference --write docs/cli.md"


def _context(command: click.Command, name: str, parent: click.Context | None) -> click.Context:
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    return click.Context(command, info_name=name, parent=parent, **settings)


def contexts(command: click.Command | None = None, ctx: click.Context | None = None) -> Iterator[click.Context]:
    """A context for `gradlab` and for every visible command below it, groups before their
    subcommands, in the order `--help` lists them."""
    if command is None:
        from gradlab.cli.main import cli

        command, ctx = cli, _context(cli, "gradlab", None)
    yield ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from contexts(sub, _context(sub, name, ctx))


def help_text(ctx: click.Context) -> str:
    """The command's `--help`, without trailing spaces."""
    return "\n".join(line.rstrip() for line in ctx.get_help().splitlines())


def _anchor(path: str) -> str:
    return path.replace(" ", "-")


def render() -> str:
    """docs/cli.md: a list of the commands, then each command's help in a fenced block."""
    pages = [(ctx.command_path, help_text(ctx)) for ctx in contexts()]
    out = ["# Command-line reference", "",
           "Every `gradlab` command's `--help`, generated from the commands themselves; do not edit by hand.",
           f"Regenerate with `{REGENERATE}` (tests/test_cli_reference.py fails while it is stale).", ""]
    out += [f"- [`{path}`](#{_anchor(path)})" for path, _ in pages]
    for path, text in pages:
        out += ["", f"## {path}", "", "```text", text, "```"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gradlab.cli.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PATH", type=Path, help="write the reference here instead of printing it")
    args = parser.parse_args(argv)
    text = render()
    if args.write is None:
        print(text, end="")
    else:
        args.write.write_text(text, encoding="utf-8")
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
