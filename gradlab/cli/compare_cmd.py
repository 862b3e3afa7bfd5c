"""`gradlab compare`: the degradation experiment in one command."""

from __future__ import annotations

import functools

import click

from gradlab.cli.options import ResumeNotice, cpu_threads, preset_from, run_options, spec_overrides, trackers_from
from gradlab.cli.shared_options import formats_option, style_option
from gradlab.cli.sweep_options import sweep_from, sweep_options
from gradlab.launch import LAUNCHERS


def launcher_options(f):
    """Where the runs execute: here (--jobs), or as submitit jobs (SLURM or local)."""
    options = [
        click.option("--launcher", type=click.Choice(LAUNCHERS), default="local",
                     show_default=True,
                     help="local: here (--jobs at once); slurm: one SLURM job array through submitit; "
                          "submitit-local: the same jobs as local subprocesses (try a sweep without SLURM)."),
        click.option("--partition", default=None, help="slurm: the partition to submit to."),
        click.option("--gpus-per-run", type=click.IntRange(min=0), default=None,
                     help="slurm/submitit-local: GPUs per run [slurm: 1, submitit-local: 0]."),
        click.option("--cpus-per-run", type=click.IntRange(min=1), default=None,
                     help="slurm/submitit-local: CPUs per run (also its torch threads) [slurm: the cluster's default]."),
        click.option("--timeout-min", type=click.IntRange(min=1), default=None,
                     help="slurm/submitit-local: time limit per job in minutes [1440]; a run that hits it is "
                          "requeued and resumes from its checkpoint."),
        click.option("--array-parallelism", type=click.IntRange(min=1), default=None,
                     help="slurm: at most this many runs at once [all]."),
        click.option("--wait/--no-wait", default=True, show_default=True,
                     help="--no-wait (slurm/submitit-local): submit, print the job ids and the report command, exit."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def launcher_from(launcher, jobs, wait, partition, gpus_per_run, cpus_per_run, timeout_min, array_parallelism):
    """SubmititLauncher arguments, or None for the local launcher; nonsense combinations are usage errors."""
    given = {"--partition": partition, "--gpus-per-run": gpus_per_run, "--cpus-per-run": cpus_per_run,
             "--timeout-min": timeout_min, "--array-parallelism": array_parallelism}
    if launcher == "local":
        used = [k for k, v in given.items() if v is not None] + ([] if wait else ["--no-wait"])
        if used:
            raise click.UsageError(f"{', '.join(used)} apply to submitted jobs; add --launcher slurm "
                                   f"(or --launcher submitit-local to try it here)")
        return None
    if jobs != 1:
        raise click.UsageError(f"--jobs is for --launcher local; with --launcher {launcher} every run is its own "
                               f"job" + (" (limit how many run at once with --array-parallelism)"
                                         if launcher == "slurm" else ""))
    if launcher == "submitit-local":
        used = [k for k in ("--partition", "--array-parallelism") if given[k] is not None]
        if used:
            raise click.UsageError(f"{', '.join(used)} apply to --launcher slurm only; submitit-local starts "
                                   f"every run at once on this machine")
    return {"cluster": "slurm" if launcher == "slurm" else "local", "partition": partition,
            "gpus_per_run": gpus_per_run, "cpus_per_run": cpus_per_run, "timeout_min": timeout_min,
            "array_parallelism": array_parallelism}


@click.command()
@click.option("--depths", default=None, help="Comma-separated depths, e.g. 20,56,110 (default: the preset's).")
@click.option("--families", default=None,
              help="Comma-separated: plain, resnet, fixup, rezero, skipinit, nfresnet (default: the preset's, "
                   "plain,resnet).")
@click.option("--seeds", default=None, help="Comma-separated seeds, e.g. 0,1,2 (default: 0).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Report folder (default: reports/<experiment>).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs trained at once (worker processes share the CPU threads or the GPU).")
@formats_option
@style_option
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: only on a terminal).")
@launcher_options
@sweep_options
@run_options(recipe=False)
def compare(depths, families, seeds, out, jobs, formats, style, progress, launcher, partition, gpus_per_run,
            cpus_per_run, timeout_min, array_parallelism, wait, **opts):
    """Train plain and residual networks at matched depths and build a report.

    One run per (family, depth, swept recipe values, seed) goes to
    <runs-dir>/<experiment>/, named by the values a sweep varies (fixup20-lr0.1-s0);
    finished runs with the same whole recipe are reused and interrupted ones resume, so
    rerunning the command is safe. The plan, its run count and an estimate of its time
    are printed before anything trains. The report (figures, table, summary) goes to --out.

    A list of values sweeps a recipe key (--lr 0.01,0.03,0.1; any key with --set KEY=V1,V2);
    --val-split N holds N training images out, and --select lr shows each model at the lr
    with its lowest validation error (mean over seeds), with a sensitivity figure of every
    value tried.

    With --launcher slurm every run is one task of a SLURM job array (submitit);
    submitting again skips finished runs and runs whose job is still pending or running.

    \b
    Examples:
      gradlab compare --depths 20,56,110 --preset quick      # offline, digits
      gradlab compare --depths 20,56 --families plain,resnet,fixup --lr 0.01,0.03,0.1 \\
          --seeds 0,1 --val-split 300 --select lr --preset quick   # 36 runs, lr chosen on validation
      gradlab compare --depths 20 --preset quick --set weight_decay=1e-4,5e-4 --seeds 0,1,2
      gradlab compare --depths 20,32,44,56 --preset paper --data-dir ~/data   # CIFAR-10 (GPU)
      gradlab compare --depths 20,56,110 --preset paper --data-dir ~/data --launcher slurm --no-wait
      gradlab compare --depths 8 --preset quick --launcher submitit-local   # the job path, here
      gradlab compare --preset imagenet_fig4 --data-dir /data/imagenet --launcher slurm   # Fig. 4
    """
    from gradlab.compare import compare as run_compare
    from gradlab.compare import plan
    from gradlab import families as fam
    from gradlab.cli.options import parse_int_list
    from gradlab.report.selection import check_request
    from gradlab.sweep import describe, varied

    preset = preset_from(opts)
    depths = parse_int_list(depths, "depths") if depths is not None else preset.compare.depths
    families = fam.parse(families) if families is not None else preset.compare.families
    seeds = parse_int_list(seeds, "seeds") if seeds is not None else preset.compare.seeds
    sweep = sweep_from(opts)
    select, select_on = opts.pop("select"), opts.pop("select_on")
    where = launcher_from(launcher, jobs, wait, partition, gpus_per_run, cpus_per_run, timeout_min,
                          array_parallelism)
    trackers = trackers_from(opts)  # checked before anything is printed or trained
    specs = plan(preset, depths, families, seeds, sweep=sweep, **spec_overrides(opts))
    first = specs[0]
    selected = check_request(select.split(",") if select else (), select_on, varied(sweep), first.data.val_split)
    _echo_plan(specs, families, depths, describe(sweep), seeds, opts["runs_dir"], selected)
    notify = functools.partial(click.echo, err=True)
    launch = None
    if where is not None:
        from gradlab.launch import SubmititLauncher

        launch = SubmititLauncher(**where, callbacks=trackers, notify=notify)
        launch.check_available()
    threads = cpu_threads(opts) if launch is None else None  # a cluster's jobs choose their own
    result = run_compare(specs, opts["runs_dir"], out=out, jobs=jobs, formats=formats, style=style, progress=progress,
                         notify=notify, callbacks=trackers + [ResumeNotice()], launcher=launch, wait=wait,
                         threads=threads, report_options={"select": selected} if selected else None)
    if not wait:
        _echo_submitted(result, opts["runs_dir"], first.experiment, out)
        return
    from gradlab.tracking import WandbTracker, log_report

    for tracker in (t for t in trackers if isinstance(t, WandbTracker) and result.report is not None):
        log_report(result.report, first.experiment, tracker.mode, tracker.project, tracker.entity)
    for warning in result.report_warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"report: {result.report_dir / 'report.md'}")
    if result.failed:
        click.echo(f"{len(result.failed)} run(s) did not finish: {', '.join(result.failed)}", err=True)
        raise SystemExit(1)


def _echo_submitted(result, runs_dir, experiment, out) -> None:
    """What was submitted, where its logs go, and what to run when it is done."""
    import shlex

    new = [s for s in result.submitted if s.new]
    for sub in result.submitted:
        what = "submitted as job" if sub.new else f"already {sub.state.lower()} as job"
        click.echo(f"{sub.spec.name}: {what} {sub.job_id}, log {sub.record.get('stderr')}", err=True)
    finished = len(result.outcomes)
    click.echo(f"{len(new)} run(s) submitted, {len(result.submitted) - len(new)} still queued or running from "
               f"before, {finished} already finished", err=True)
    report = ["gradlab", "report", f"{runs_dir}/{experiment}"] + (["--out", str(out)] if out else [])
    click.echo("when the jobs are done, build the report with:")
    click.echo(f"  {shlex.join(report)}")
    click.echo("(or rerun this command without --no-wait: it submits nothing new, waits, then reports)")


def _echo_plan(specs, families, depths, swept: str, seeds, runs_dir, selected) -> None:
    """The plan, before anything trains: its grid, run count, data, steps, where it goes."""
    first = specs[0]
    held = f", {first.data.val_split} training images held out for validation" if first.data.val_split else ""
    click.echo(f"compare: {len(specs)} runs ({', '.join(families)} x depths {', '.join(map(str, depths))}"
               f"{' x ' + swept if swept else ''} x seeds {', '.join(map(str, seeds))}) on {first.data.name}{held}, "
               f"{_steps(specs)} steps each -> {runs_dir}/{first.experiment}", err=True)
    if selected:
        click.echo(f"select: {selected[0]} per family x depth on validation error (mean over seeds)", err=True)


def _steps(specs) -> str:
    """'300' or '200 or 300' (a sweep over steps)."""
    return " or ".join(str(n) for n in sorted({s.recipe.steps for s in specs}))
