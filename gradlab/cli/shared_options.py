"""Options several commands take, each declared once here with one parser.

    @formats_option     --formats pdf,png -> ("pdf", "png")      compare, report, analyze ..., lesion, bench report
    @style_option       --style paper|notebook                    compare, report, analyze ..., lesion
    @norm_act_options   --norm bn|none, --act relu|tanh|sigmoid   train, compare, analyze gradients|spp
    @thresholds_options --set RULE.KEY=VALUE, --thresholds FILE    check, report
                        (findings_settings turns their values into the rules' Settings)

The valid formats and styles are the report side's (gradlab.report.files, gradlab.report.style),
read when a value is checked or a help page is shown: importing a command costs neither
pandas nor matplotlib (`gradlab bench -h` stays quick), and nothing here imports torch or
the model side (the report's commands must not).
"""

from __future__ import annotations

from pathlib import Path

import click


def _report_formats() -> tuple[str, ...]:
    from gradlab.report.files import SUPPORTED_FORMATS

    return SUPPORTED_FORMATS


def _report_styles() -> tuple[str, ...]:
    from gradlab.report.style import STYLES

    return STYLES


class FigureFormats(click.ParamType):
    """'pdf,png' -> ('pdf', 'png'); an unknown format or an empty item is a usage error
    naming the valid formats (case and a leading dot are ignored, repeats dropped)."""

    name = "formats"

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{'|'.join(_report_formats())}],..."

    def convert(self, value, param, ctx) -> tuple[str, ...]:
        if isinstance(value, tuple):  # already parsed
            return value
        valid = _report_formats()
        hint = f"choose from {', '.join(valid)}, comma-separated (e.g. --formats pdf,png)"
        items = [t.strip().lower().lstrip(".") for t in str(value).split(",")]
        if not any(items):
            self.fail(f"no figure format given; {hint}", param, ctx)
        if not all(items):
            self.fail(f"empty item in {value!r}; {hint}", param, ctx)
        bad = [t for t in items if t not in valid]
        if bad:
            self.fail(f"unknown figure format {', '.join(map(repr, bad))}; {hint}", param, ctx)
        return tuple(dict.fromkeys(items))


class ReportStyle(click.Choice):
    """click.Choice over the report side's styles, read when first needed."""

    def __init__(self) -> None:  # no super().__init__: `choices` is read lazily below
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        return _report_styles()


def formats_option(f):
    """--formats: figure formats, parsed into a tuple (see FigureFormats)."""
    return click.option("--formats", type=FigureFormats(), default="pdf,png", show_default=True,
                        help="Figure formats, comma-separated.")(f)


def style_option(f):
    """--style: the report theme."""
    return click.option("--style", type=ReportStyle(), default="paper", show_default=True,
                        help="paper: 7-9 pt fonts at print size; notebook: bigger.")(f)


def norm_act_options(f):
    """--norm and --act: the CIFAR plain nets' and ResNets' failure-mode build options."""
    from gradlab.models.options import ACTS, NORMS  # here: the report's commands never load the model side

    f = click.option("--act", type=click.Choice(ACTS), default=None,
                     help="CIFAR plain nets and ResNets: the main path's nonlinearity.")(f)
    return click.option("--norm", type=click.Choice(NORMS), default=None,
                        help="CIFAR plain nets and ResNets: none drops every BatchNorm (He init stays).")(f)


def thresholds_options(f):
    """--set RULE.KEY=VALUE (repeatable) and --thresholds FILE.toml: the findings rules'
    thresholds; read them with :func:`findings_settings`."""
    f = click.option("--thresholds", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="A TOML file of [rule] tables of findings thresholds (and enabled = false).")(f)
    return click.option("--set", "overrides", multiple=True, metavar="RULE.KEY=VALUE",
                        help="Override a findings threshold, or switch a rule off (RULE.enabled=false); "
                             "repeatable.")(f)  # fmt: skip


def findings_settings(overrides: tuple[str, ...], thresholds: Path | None):
    """The rules' Settings: the defaults, then the TOML file, then each --set in order (a
    wrong rule, key or value is a ConfigError naming the ones that exist)."""
    from gradlab.findings import default_settings  # here: pandas only when a command runs

    settings = default_settings()
    if thresholds is not None:
        settings.apply_file(thresholds)
    for text in overrides:
        settings.apply_text(text)
    return settings
