"""`gradlab train MODEL`: one run into a run directory."""

from __future__ import annotations

import click

from gradlab.cli.options import preset_from, run_options, spec_overrides, trackers_from


@click.command()
@click.argument("model")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (init, data order, augmentation).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a terminal).")
@run_options
def train(model, seed, progress, **opts):
    """Train MODEL (e.g. resnet20, plain56; see `gradlab models`) into
    <runs-dir>/<experiment>/<model>-s<seed>/.

    Rerunning the same command resumes an interrupted run and leaves a finished one alone.

    \b
    Examples:
      gradlab train resnet20 --preset quick            # digits, offline, ~1 min on a CPU
      gradlab train plain56 --preset paper --data-dir ~/data   # CIFAR-10, the paper's recipe
    """
    from gradlab.config import make_run_spec
    from gradlab.train import train as train_run

    spec = make_run_spec(model, preset_from(opts), seed=seed, **spec_overrides(opts))
    click.echo(f"{spec.name}: {spec.data.name}, {spec.recipe.steps} steps, batch {spec.recipe.batch_size} "
               f"-> {opts['runs_dir']}/{spec.experiment}/{spec.name}", err=True)
    result = train_run(spec, opts["runs_dir"], progress=progress, callbacks=trackers_from(opts))
    from gradlab import runs

    run = runs.read_run(result.run_dir)
    line = (f"{result.state}: {spec.name} at step {result.step}, train error {run.final('train_err'):.2%}, "
            f"test error {run.final('test_err'):.2%}")
    if result.message:
        line += f" ({result.message})"
    click.echo(line)
    if result.state not in runs.FINISHED_STATES:
        raise SystemExit(1)
