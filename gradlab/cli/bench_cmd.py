"""`gradlab bench`: speed and overhead measurements (subcommands register on this group)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gradlab import stat_names as S
from gradlab.cli.shared_options import formats_option
from gradlab.config import COMPILE_MODES, REDUCE_AT


@click.group("bench")
def bench():
    """Measure speed and overhead side by side (results vary by machine; nothing is asserted).

    \b
    Examples:
      gradlab bench throughput --models resnet20 --steps 5 --repeats 3
      gradlab bench overhead --stats act_grad_norm --no-wandb
    """


def _progress_printer():
    """A progress callback for interleaved(): only when stdout is a terminal."""
    if not sys.stdout.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc="rounds", unit="round", leave=False)

    def progress(name, done, total):
        bar.total = total
        bar.set_postfix_str(name)
        bar.update(done - bar.n)

    return progress, bar.close


@bench.command("overhead")
@click.option("--model", "models", default="resnet56,transformer,resnet20@8", show_default=True,
              help="Cases, comma-separated: a zoo model name or transformer (a 12-layer pre-LN transformer), "
              "@N for the batch size, :sigmoid or :tanh for a CIFAR net's activation (plain20:sigmoid@8).")
@click.option("--steps", default=5, show_default=True, type=click.IntRange(1), help="Timed steps per variant per round.")
@click.option("--repeats", default=6, show_default=True, type=click.IntRange(1),
              help="Interleaved rounds (6: each of the six orders of the three variants once). "
              "From 6 rounds on, the 95% confidence interval of the median ratio is printed; more rounds narrow it.")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0), help="Untimed steps per variant first.")
@click.option("--batch-size", default=None, type=click.IntRange(1),
              help="Batch of the cases without @N (default: 128 images, 4 sequences of 8 tokens).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps.")
@click.option("--every", default=1, show_default=True, type=click.IntRange(1), help="gradlab records every N-th step.")
@click.option("--no-wandb", is_flag=True, help="Skip the wandb.watch variant.")
@click.option("--lightning", "with_lightning", is_flag=True,
              help="Also time a bare Lightning step against one with gradlab's Lightning callback (needs lightning).")
@click.option("--findings", "with_findings", is_flag=True,
              help="Also time gradlab writing a run directory with the findings rules at each flush (the mean step "
              "includes the flushes: time more steps than --flush-every).")
@click.option("--flush-every", default=64, show_default=True, type=click.IntRange(1),
              help="With --findings: recorded steps between flushes (a run's default: 64).")
@click.option("--compile", "compiled", is_flag=True,
              help="Instead: a torch.compile'd case watched with the default schedule against the same compiled case "
              "never watched, unrecorded steps timed (default case: transformer).")
@click.option("--reduce-at", type=click.Choice(REDUCE_AT), default="auto", show_default=True,
              help="Where gradlab reduces: in each hook, deferred to step(), or mixed: small tensors at step(), "
              "large ones in the hooks (auto: step on CUDA, mixed on CPU).")
@click.option("--stats", "stats_csv", default=None, metavar="NAMES",
              help="Comma-separated statistics gradlab records, to measure what a selection costs "
              f"(default: all of {', '.join(S.DEFAULT_STATS)}).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write all figures here.")
def overhead(models, steps, repeats, warmup, batch_size, device, every, no_wandb, with_lightning, with_findings,
             flush_every, compiled, reduce_at, stats_csv, json_path):
    """Training-step time bare vs gradlab (every step) vs wandb.watch, interleaved in one process,
    for a step dominated by arithmetic (ResNet-56 at batch 128) and two short ones made of many
    small ops (the transformer, ResNet-20 at batch 8), one case after the other.

    \b
    Example (CPU, a few minutes):
      gradlab bench overhead --repeats 12
    One case, what the gradient norms along depth cost alone:
      gradlab bench overhead --model resnet56 --stats act_grad_norm --no-wandb
    What gradlab's Lightning callback costs over a bare Lightning step:
      gradlab bench overhead --model resnet56 --lightning --no-wandb
    With a run directory and the findings rules at each flush (two flushes in 132 steps):
      gradlab bench overhead --model resnet56 --findings --no-wandb --repeats 12 --steps 11
    A compiled model's unrecorded steps, watched and not:
      gradlab bench overhead --compile --repeats 12
    Without the fused CPU kernels (PyTorch ops reduce instead; the printout says which ran):
      GRADLAB_NATIVE=0 gradlab bench overhead --repeats 12
    """
    if compiled:
        from gradlab.bench.compile_overhead import format_result as compile_text
        from gradlab.bench.compile_overhead import run_compile_overhead

        case = "transformer" if "," in models else models
        result = run_compile_overhead(case, steps=steps, repeats=repeats, device=device)
        click.echo(compile_text(result))
        _write_json(json_path, result)
        return
    from gradlab.bench.overhead import format_cases, format_result, run_overhead, run_overhead_cases

    options = dict(steps=steps, repeats=repeats, device=device, warmup=warmup, with_wandb=not no_wandb,
                   with_lightning=with_lightning, with_findings=with_findings, flush_every=flush_every, every=every,
                   reduce_at=reduce_at,
                   stats=None if stats_csv is None else [n.strip() for n in stats_csv.split(",") if n.strip()])
    progress, close = _progress_printer()
    try:
        if "," in models:
            result = run_overhead_cases(models, batch_size, progress=progress, **options)
        else:
            result = run_overhead(models, batch_size=batch_size, progress=progress, **options)
    finally:
        close()
    click.echo(format_cases(result) if "cases" in result else format_result(result))
    _write_json(json_path, result)


def _write_json(json_path: Path | None, result: dict) -> None:
    if json_path is None:
        return
    from gradlab.file_io import write_json

    write_json(json_path, result)
    click.echo(f"wrote {json_path}")


@bench.command("throughput")
@click.option("--models", default="resnet20,resnet56,resnet110", show_default=True, help="Comma-separated zoo models.")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--steps", default=10, show_default=True, type=click.IntRange(1), help="Timed steps per loop per round.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1), help="Interleaved rounds.")
@click.option("--workers", default=None, type=click.IntRange(0),
              help="DataLoader workers of the reference loop (default: min(4, CPUs)).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--compile", "compile_", is_flag=True,
              help="Also time gradlab's step under torch.compile (compile time reported on its own).")
@click.option("--compile-mode", type=click.Choice(COMPILE_MODES), default=None,
              help="torch.compile mode of that variant (implies --compile); reduce-overhead uses CUDA graphs.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write all figures here.")
def throughput(models, batch_size, steps, repeats, workers, device, compile_, compile_mode, json_path):
    """Training images/s: gradlab's loop vs the conventional DataLoader + PIL transforms loop.

    \b
    Example (CPU, a few minutes):
      gradlab bench throughput --models resnet20 --steps 5 --repeats 3
    Example (GPU, with CUDA graphs):
      gradlab bench throughput --compile-mode reduce-overhead
    """
    from gradlab.bench.throughput import format_result, run_throughput
    from gradlab.models import info

    names = [m.strip() for m in models.split(",") if m.strip()]
    for name in names:
        info(name)  # a bad name is a clear error before any work
    progress, close = _progress_printer()
    try:
        result = run_throughput(names, batch_size, steps, repeats, device, workers, progress=progress,
                                compile=compile_, compile_mode=compile_mode)
    finally:
        close()
    click.echo(format_result(result))
    _write_json(json_path, result)


@bench.command("report")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1))
@formats_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write all figures here.")
def report(repeats, formats, json_path):
    """Time and peak memory of a report at paper scale (6 runs x 64k steps, synthetic run directories).

    \b
    Example:
      gradlab bench report --repeats 1 --formats png --json report-bench.json
    """
    from gradlab.bench.report_bench import format_result, run_report_bench

    result = run_report_bench(repeats, ",".join(formats))
    click.echo(format_result(result))
    _write_json(json_path, result)


@bench.command("findings")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the cases' runs go (kept; reused when there) [default: a temporary folder].")
@click.option("--case", "names", multiple=True, help="Only this case (repeatable); default: all.")
def findings(out, names):
    """The pathology suite: small nets with a pathology put in on purpose, and healthy nets,
    checked by the findings engine against their known answers (docs/findings.md).

    \b
    Example:
      gradlab bench findings
      gradlab bench findings --out runs/pathologies --case nan_weight
    """
    import tempfile

    from gradlab.bench.findings_suite import suite, suite_markdown

    with tempfile.TemporaryDirectory(prefix="gradlab-pathologies-") as tmp:
        rows = suite(Path(out) if out else Path(tmp), names or None,
                     progress=lambda m: click.echo(m, err=True))  # fmt: skip
    click.echo(suite_markdown(rows))
    bad = [r["case"] for r in rows if not r["ok"]]
    click.echo(f"{len(rows) - len(bad)} of {len(rows)} cases as known" + (f"; not: {', '.join(bad)}" if bad else ""))


@bench.command("long-run")
@click.option("--steps", default=100_000, show_default=True, type=click.IntRange(200),
              help="Steps recorded by the append-only writer (gradlab's).")
@click.option("--baseline-steps", default=4_000, show_default=True, type=click.IntRange(0),
              help="Steps recorded by the rewrite-everything baseline (0: leave it out); its flushes grow with the run.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1), help="torch threads in each run.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write all figures here.")
def long_run(steps, baseline_steps, threads, json_path):
    """A flush's time and the peak memory near the start and the end of a long run recorded every
    step (a 12-layer pre-LN transformer, synthetic steps after a real one), against a writer
    that rewrites everything at each flush.

    \b
    Example:
      gradlab bench long-run --steps 100000 --baseline-steps 4000 --json long-run.json
    """
    from gradlab.bench.long_run import format_result, run_long_run

    progress, done = _progress_printer()
    try:
        result = run_long_run(steps, baseline_steps, threads, progress)
    finally:
        done()
    click.echo(format_result(result))
    _write_json(json_path, result)


@bench.command("concurrency")
@click.option("--model", default="resnet20", show_default=True, help="Zoo model name.")
@click.option("--runs", default=2, show_default=True, type=click.IntRange(2), help="Runs trained at once.")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--steps", default=5, show_default=True, type=click.IntRange(1), help="Timed steps per variant per round.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1), help="Interleaved rounds.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write all figures here.")
def concurrency(model, runs, batch_size, steps, repeats, device, json_path):
    """Several runs on one device: N worker processes vs one torch.func stack of N models.

    Total training images/s of N same-architecture runs, each way, against one run alone.

    \b
    Example (CPU, a minute or two):
      gradlab bench concurrency --model resnet20 --runs 2 --steps 3 --repeats 3
    """
    from gradlab.bench.concurrency import format_result, run_concurrency
    from gradlab.models import info

    info(model)  # a bad name is a clear error before any work
    progress, close = _progress_printer()
    try:
        result = run_concurrency(model, runs, batch_size, steps, repeats, device=device, progress=progress)
    finally:
        close()
    click.echo(format_result(result))
    _write_json(json_path, result)


@bench.command("busy")
@click.option("--model", default="resnet20", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True, help="Timed steps per variant and round.")
@click.option("--repeats", type=click.IntRange(min=1), default=4, show_default=True, help="Rounds.")
@click.option("--hogs", type=click.IntRange(min=1), default=1, show_default=True, help="Busy processes started beside.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write all figures here.")
def busy(model, batch_size, steps, repeats, hogs, json_path):
    """Training steps beside busy processes: all threads against the count gradlab chooses.

    \b
    Example:
      gradlab bench busy                  # resnet20 beside one busy process
    """
    from gradlab.bench.busy import format_result, run_busy

    progress, close = _progress_printer()
    try:
        result = run_busy(model, batch_size, steps, repeats, hogs, progress=progress)
    finally:
        close()
    click.echo(format_result(result))
    _write_json(json_path, result)


@bench.command("paper")
@click.option("--depths", default="20,56,110", show_default=True, help="CIFAR depths (6n+2), comma-separated.")
@click.option("--families", default="plain,resnet", show_default=True, help="plain, resnet or both.")
@click.option("--seconds", default=20.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Length of the window in which all runs train at once.")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(0),
              help="Untimed steps per run after its first (compiling) one.")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--steps", "total_steps", default=64000, show_default=True, type=click.IntRange(1),
              help="Iterations per run to extrapolate to (the paper: 64k).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--compile-mode", type=click.Choice(COMPILE_MODES), default=None,
              help="torch.compile every run in this mode (default: eager); reduce-overhead uses CUDA graphs.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write all figures here.")
def paper(depths, families, seconds, warmup, batch_size, total_steps, device, compile_mode, json_path):
    """How long the paper's comparison takes here: all its runs training at once on one device.

    One worker process per run (as `gradlab compare --jobs N`), each on the real trainer with
    synthetic CIFAR-shaped data. After every run has compiled and warmed up, all train at
    once for --seconds; each run's steps/s while sharing the device, plus its recorded steps
    (305 of 64k) and evaluations timed alone, give its minutes for the full run. The
    comparison takes as long as its slowest run (long on the whole: once the small runs
    finish, the big ones speed up); it also says how long all runs' steps take at the
    measured total rate (short: one big run alone does not keep that rate).

    \b
    Example (GPU, a few minutes, most of them compiling):
      gradlab bench paper --compile-mode reduce-overhead --json paper.json
    Example (CPU, a minute):
      gradlab bench paper --depths 20 --seconds 3 --warmup 1
    """
    from gradlab import families as fam
    from gradlab.bench.paper import format_result, run_paper
    from gradlab.cli.options import parse_int_list

    depth_list = parse_int_list(depths, "depths")
    family_list = fam.parse(families)
    progress, close = _progress_printer()
    try:
        result = run_paper(depth_list, family_list, batch_size=batch_size, seconds=seconds, warmup=warmup,
                           device=device, compile_mode=compile_mode, total_steps=total_steps, progress=progress)
    finally:
        close()
    click.echo(format_result(result))
    _write_json(json_path, result)
