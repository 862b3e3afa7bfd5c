"""`gradlab train MODEL`: one run into a run directory."""

from __future__ import annotations

import click
from click.core import ParameterSource

from gradlab.cli.options import ResumeNotice, cpu_threads, preset_from, run_options, spec_overrides, trackers_from
from gradlab.config import FREEZE_CHOICES, TORCHVISION_WEIGHTS


@click.command()
@click.argument("model")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (init, data order, augmentation).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a terminal).")
@click.option("--weights", default=None, metavar="FILE|torchvision",
              help="Fine-tune from pretrained weights: a state-dict FILE, or 'torchvision' (its default ImageNet "
                   "weights, downloaded when the network allows; ImageNet ResNets only). The classifier is new.")
@click.option("--freeze", type=click.Choice(FREEZE_CHOICES), default=None,
              help="With --weights: keep fixed the backbone (all but the classifier), or all but the last stage "
                   "and the classifier. Default: none.")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Train this one run data-parallel in N processes on this machine (through torchrun; one GPU "
                   "each on CUDA). --batch-size stays the global batch.")
@run_options
@click.pass_context
def train(ctx, model, seed, progress, weights, freeze, nproc, **opts):
    """Train MODEL (e.g. resnet20, plain56; see `gradlab models`) into
    <runs-dir>/<experiment>/<model>-s<seed>/.

    Rerunning the same command resumes an interrupted run and leaves a finished one alone.
    Under torchrun (or with --nproc N) the run is data-parallel: process 0 writes the run
    directory, and the result matches one process with the same global batch.

    \b
    Examples:
      gradlab train resnet20 --preset quick            # digits, offline
      gradlab train plain56 --preset paper --data-dir ~/data   # CIFAR-10, the paper's recipe
      gradlab train resnet56 --preset paper --nproc 4  # one run on 4 GPUs (or 4 CPU processes)
      torchrun --nproc_per_node=4 -m gradlab train resnet56 --preset paper   # the same
      gradlab train resnet18 --weights torchvision --freeze backbone --dataset cifar10 --steps 2000
      gradlab train resnet18 --weights resnet18.pth --dataset digits   # offline: a saved state dict
    """
    from gradlab.config import make_run_spec
    from gradlab.distributed import World

    if weights and weights != TORCHVISION_WEIGHTS:
        from pathlib import Path

        weights = str(Path(weights).expanduser().resolve())  # the same run from any working directory
    overrides = spec_overrides(opts)
    overrides["model_options"].update(weights=weights, freeze=freeze)
    spec = make_run_spec(model, preset_from(opts), seed=seed, **overrides)
    callbacks = trackers_from(opts) + [ResumeNotice()]  # checked before anything is printed or trained
    world = World.from_env()
    if nproc is not None and nproc > 1:
        if world.enabled:
            raise click.UsageError("--nproc starts torchrun itself; under torchrun leave it out")
        raise SystemExit(_launch(ctx, spec, nproc))
    if world.main:
        click.echo(f"{spec.name}: {spec.data.name}, {spec.recipe.steps} steps, batch {spec.recipe.batch_size}"
                   f"{f' over {world.size} processes' if world.enabled else ''} "
                   f"-> {opts['runs_dir']}/{spec.experiment}/{spec.name}", err=True)
    cpu_threads(opts)
    from gradlab.train import train as train_run

    result = train_run(spec, opts["runs_dir"], progress=progress, callbacks=callbacks)
    from gradlab import runs

    if world.main:
        run = runs.read_run(result.run_dir)
        line = (f"{result.state}: {spec.name} at step {result.step}, train error {run.final('train_err'):.2%}, "
                f"test error {run.final('test_err'):.2%}")
        if result.message:
            line += f" ({result.message})"
        click.echo(line)
    if result.state not in runs.FINISHED_STATES:
        raise SystemExit(1)


def _launch(ctx: click.Context, spec, nproc: int) -> int:
    """Check what can be checked here, then run this same command in `nproc` processes."""
    from gradlab import distributed
    from gradlab.environment import resolve_device
    from gradlab.errors import ConfigError

    distributed.World(size=nproc).check_batch(spec.recipe.batch_size)
    device = resolve_device(spec.device)
    if device.type == "cuda":
        import torch

        if device.index is not None:
            raise ConfigError(f"--device {spec.device} names one GPU; with --nproc {nproc} use --device cuda "
                              f"(process i takes cuda:i)")
        if nproc > torch.cuda.device_count():
            raise ConfigError(f"--nproc {nproc} needs {nproc} GPUs, but {torch.cuda.device_count()} are visible; "
                              f"use --nproc {torch.cuda.device_count()} or fewer, or --device cpu")
    if spec.model.weights:  # a clear error here rather than in every process; fills the download cache
        from gradlab import finetune

        finetune.load_state(spec.model)
    return distributed.launch(nproc, _command_line(ctx, drop="nproc"))


def _command_line(ctx: click.Context, drop: str) -> list[str]:
    """`<command> ARGS...` giving the parameters set explicitly in ``ctx``, except ``drop``."""
    args = [ctx.info_name]
    for param in ctx.command.params:
        name = param.name
        if name == drop or ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            continue
        value = ctx.params[name]
        if isinstance(param, click.Argument):
            args.append(str(value))
        elif param.is_flag:
            if value:
                args.append(param.opts[0])
            elif param.secondary_opts:
                args.append(param.secondary_opts[0])
        else:
            for v in value if param.multiple else (value,):
                args += [param.opts[0], str(v)]
    return args
