"""`gradlab` entry point: a click group whose subcommands load lazily.

Lazy loading keeps `gradlab --help` and `gradlab report` free of the torch import.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import click

from gradlab import __version__
from gradlab.errors import GradlabError, RunInterrupted

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# name -> (module, attribute, one-line help shown in `gradlab --help`)
COMMANDS = {
    "models": ("gradlab.cli.models_cmd", "models", "List the model zoo with depths and sizes."),
    "presets": ("gradlab.cli.presets_cmd", "presets", "List the presets (--preset NAME) and what they set."),
    "train": ("gradlab.cli.train_cmd", "train", "Train one model into a run directory."),
    "runs": ("gradlab.cli.runs_cmd", "runs", "List run directories with status and errors."),
    "compare": ("gradlab.cli.compare_cmd", "compare", "Train nets of several families at matched depths and report."),
    "report": ("gradlab.cli.report_cmd", "report", "Build paper-style figures from runs."),
    "check": ("gradlab.cli.check_cmd", "check", "Say what is wrong in runs: findings with layers, steps, evidence."),
    "analyze": ("gradlab.cli.analyze_cmd", "analyze",
                "At-init analyses: gradient flow, signal propagation, shattering."),
    "lesion": ("gradlab.cli.lesion_cmd", "lesion", "Delete layers or blocks of trained nets one at a time (Veit et al.)."),
    "bench": ("gradlab.cli.bench_cmd", "bench", "Measure speed and overhead side by side."),
}

# old names that still work (each says its new name on stderr), left out of help and docs/cli.md
OLD_NAMES = {
    "probe": ("gradlab.cli.analyze_cmd", "probe", "Old name of `gradlab analyze`."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when used: name -> (module, attribute, help);
    `hidden_commands` (same form) work but are not listed."""

    def __init__(self, *args, lazy_commands: dict | None = None, hidden_commands: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = COMMANDS if lazy_commands is None else lazy_commands
        self.hidden_commands = hidden_commands or {}

    def list_commands(self, ctx):
        return [n for n in self.lazy_commands if self._available(n)]

    def _available(self, name):
        module = {**self.hidden_commands, **self.lazy_commands}[name][0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx, name):
        known = {**self.hidden_commands, **self.lazy_commands}
        if name not in known or not self._available(name):
            return None
        module, attr, _ = known[name]
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx):
        # A GradlabError is the user's to fix: show its message, not a traceback.
        try:
            return super().invoke(ctx)
        except RunInterrupted as e:  # a clean stop, not an error: say where and how to go on
            click.echo(f"stopped: {e}", err=True)
            raise SystemExit(e.exit_code) from None
        except GradlabError as e:
            error = click.ClickException(str(e))
            error.exit_code = getattr(e, "exit_code", 1)
            raise error from e

    def format_commands(self, ctx, formatter):
        rows = [(n, self.lazy_commands[n][2]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, hidden_commands=OLD_NAMES, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", "-V", prog_name="gradlab")
def cli():
    """gradlab: paired plain/residual networks, gradient-flow recording and
    paper-style reports for studying degradation (He et al. 2015).

    \b
    Start here:
      gradlab models                                  the model zoo
      gradlab compare --depths 20,56,110 --preset quick   the paper's experiment on digits, offline
    """


def main(argv=None):
    """Console-script entry point."""
    if argv is None:
        _utf8_mode()
    cli.main(args=argv, prog_name="gradlab")


def _utf8_mode() -> None:
    """Run again in Python's UTF-8 mode where the locale would make text and file names ASCII
    (LC_ALL=C with PYTHONUTF8=0): gradlab's files and messages are UTF-8, and a non-ASCII
    path must reach pyarrow and pandas as text, not as surrogate escapes."""
    if sys.flags.utf8_mode or sys.getfilesystemencoding().lower().replace("-", "") == "utf8":
        return
    os.execv(sys.executable, [sys.executable, "-X", "utf8", "-m", "gradlab", *sys.argv[1:]])
