"""Options shared by `train` and `compare` (one definition, used by both), and the
comma-separated lists of numbers several commands take (--depths, --seeds)."""

from __future__ import annotations

from pathlib import Path

import click

from gradlab.callbacks import Callback
from gradlab.cli.shared_options import norm_act_options
from gradlab.config import COMPILE_MODES, check_seed
from gradlab.data import DATASETS
from gradlab.errors import ConfigError


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    """'20,56,110' -> (20, 56, 110); an empty list or item, junk or a repeat is a clear error
    (seeds are checked as seeds: whole numbers from 0)."""
    example = "0,1,2" if what == "seeds" else "20,56,110"
    raw = [t.strip() for t in str(text).split(",")]
    if not any(raw):
        raise ConfigError(f"--{what} is empty; give a comma-separated list such as {example}")
    if not all(raw):
        raise ConfigError(f"--{what} has an empty item in '{text}'; give a comma-separated list such as {example}")
    out = []
    for t in raw:
        if not t.lstrip("-").isdigit():
            raise ConfigError(f"--{what}: '{t}' is not a whole number; give a comma-separated list such as {example}")
        out.append(check_seed(int(t)) if what == "seeds" else int(t))
    if len(set(out)) != len(out):
        raise ConfigError(f"--{what} lists a value twice: {text}")
    return tuple(out)


_RECIPE_OPTIONS = [
    click.option("--steps", type=int, default=None, help="Training iterations; the lr milestones scale with it."),
    click.option("--batch-size", type=int, default=None, help="Mini-batch size."),
    click.option("--lr", type=float, default=None, help="Base learning rate."),
]


def run_options(f=None, *, recipe: bool = True):
    """Preset/config, data and recipe overrides, device and output location. recipe=False
    leaves out --steps, --batch-size and --lr (`compare` takes them as lists to sweep)."""
    if f is None:
        return lambda g: run_options(g, recipe=recipe)
    options = [
        click.option("--preset", default=None, help="Named preset from experiments/ (paper, quick, imagenet_fig4). Default: paper."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                     help="A preset TOML file instead of a named preset."),
        click.option("--dataset", type=click.Choice(DATASETS), default=None, help="Dataset (overrides the preset)."),
        click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                     help="Folder holding the dataset files (default: $GRADLAB_DATA or ~/.cache/gradlab/data)."),
        click.option("--image-size", type=click.IntRange(min=8), default=None,
                     help="imagefolder only: training crop side in pixels (default 224; evaluation resizes "
                          "to 256/224 of it and center-crops)."),
        click.option("--val-split", type=click.IntRange(min=0), default=None,
                     help="Training images held out for validation (the paper: 5000)."),
        *(_RECIPE_OPTIONS if recipe else []),
        click.option("--no-record", is_flag=True, help="Do not record per-layer statistics."),
        norm_act_options,
        click.option("--drop-path", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help="Stochastic depth on residual nets: the last block is dropped with this probability "
                          "in training, block l of L with P*l/L."),
        click.option("--zero-init-residual", is_flag=True, default=None,
                     help="Each residual branch's last BN gamma starts at 0 (Goyal et al. 2017)."),
        click.option("--runs-dir", type=click.Path(file_okay=False), default="runs", show_default=True,
                     help="Where run directories go (<runs-dir>/<experiment>/<run>)."),
        click.option("--experiment", default=None, help="Experiment name (default: <preset>-<dataset>)."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads to train with, at most the usable cores (default: the cores other "
                          "processes leave free; also GRADLAB_THREADS or OMP_NUM_THREADS)."),
        click.option("--compile", "compile_", is_flag=True,
                     help="torch.compile the model (recorded steps run eagerly; compile time is reported apart)."),
        click.option("--compile-mode", type=click.Choice(COMPILE_MODES), default=None,
                     help="torch.compile mode (implies --compile); reduce-overhead uses CUDA graphs on a GPU."),
        click.option("--wandb", "wandb_mode", type=click.Choice(["online", "offline", "disabled"]), default=None,
                     help="Track runs in W&B (default: disabled, or what WANDB_MODE says)."),
        click.option("--wandb-project", default="gradlab", show_default=True, help="W&B project."),
        click.option("--wandb-entity", default=None, help="W&B entity (team or user)."),
        click.option("--tensorboard", "tensorboard_dir", type=click.Path(), default=None, metavar="DIR",
                     help="Also write TensorBoard event files, one folder per run (DIR/<experiment>/<run>), "
                          "e.g. --tensorboard runs/tensorboard, then `tensorboard --logdir runs/tensorboard`."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def preset_from(opts: dict):
    """The preset named by --preset or read from --config (not both)."""
    from gradlab.config import load_preset

    if opts["preset"] and opts["config_file"]:
        raise click.UsageError("give --preset or --config, not both")
    return load_preset(opts["preset"], opts["config_file"])


def spec_overrides(opts: dict) -> dict:
    """Keyword arguments of gradlab.config.make_run_spec from the shared options."""
    return {
        "experiment": opts["experiment"],
        "device": opts["device"],
        "compile": opts["compile_"],
        "compile_mode": opts["compile_mode"],
        "steps": opts.get("steps"),
        "data": {"name": opts["dataset"], "data_dir": opts["data_dir"], "val_split": opts["val_split"],
                 "image_size": opts["image_size"]},
        "recipe": {"batch_size": opts.get("batch_size"), "lr": opts.get("lr"),
                   "record": False if opts["no_record"] else None},
        "model_options": {"norm": opts["norm"], "act": opts["act"], "drop_path": opts["drop_path"],
                          "zero_init_residual": opts["zero_init_residual"] or None},
    }


def trackers_from(opts: dict) -> list:
    """The trackers asked for: W&B, TensorBoard, both or none (each checked before any training)."""
    from gradlab.tracking import (
        TensorBoardTracker,
        WandbTracker,
        check_credentials,
        check_log_dir,
        resolve_mode,
    )

    trackers = []
    if opts["tensorboard_dir"] is not None:
        trackers.append(TensorBoardTracker(check_log_dir(opts["tensorboard_dir"])))
    mode = resolve_mode(opts["wandb_mode"])
    if mode != "disabled":
        check_credentials(mode)
        trackers.append(WandbTracker(mode, project=opts["wandb_project"], entity=opts["wandb_entity"]))
    return trackers


class ResumeNotice(Callback):
    """Says on stderr that a run resumes, and from where: "resnet56-s0: resuming from step
    2000 of 64000"."""

    def on_start(self, run_dir, spec: dict, resumed: bool) -> None:
        if resumed:
            from gradlab import runs

            status = runs.read_status(run_dir)
            click.echo(f"{spec.get('name', Path(run_dir).name)}: resuming from step {status.get('step', '?')} "
                       f"of {status.get('total_steps', '?')}", err=True)


def cpu_threads(opts: dict) -> int:
    """Set and return the CPU threads to train with (gradlab.threads.choose_threads),
    saying once on stderr when a busy machine leaves fewer cores free, or when more threads
    were asked for than there are cores (then as many as the cores)."""
    import torch

    from gradlab.threads import choose_threads

    threads, line = choose_threads(opts["threads"], torch.get_num_threads())
    torch.set_num_threads(threads)
    if line:
        click.echo(line, err=True)
    return threads
