"""`gradlab bench`: speed and overhead measurements (subcommands register on this group)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gradlab import stat_names as S
from gradlab.config import COMPILE_MODES, REDUCE_AT


@click.group("bench")
def bench():
    """Measure speed and overhead side by side (results vary by machine; nothing is asserted)."""


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
@click.option("--model", default="resnet56", show_default=True, help="Zoo model name.")
@click.option("--steps", default=5, show_default=True, type=click.IntRange(1), help="Timed steps per variant per round.")
@click.option("--repeats", default=6, show_default=True, type=click.IntRange(1),
              help="Interleaved rounds (6: each of the six orders of the three variants once). "
              "From 6 rounds on, the 95% confidence interval of the median ratio is printed; more rounds narrow it.")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0), help="Untimed steps per variant first.")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps.")
@click.option("--every", default=1, show_default=True, type=click.IntRange(1), help="gradlab records every N-th step.")
@click.option("--no-wandb", is_flag=True, help="Skip the wandb.watch variant.")
@click.option("--reduce-at", type=click.Choice(REDUCE_AT), default="auto", show_default=True,
              help="Where gradlab reduces: in each hook, or deferred to step() (auto: step on CUDA, hooks on CPU).")
@click.option("--stats", "stats_csv", default=None, metavar="NAMES",
              help="Comma-separated statistics gradlab records, to measure what a selection costs "
              f"(default: all of {', '.join(S.DEFAULT_STATS)}).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write all figures here.")
def overhead(model, steps, repeats, warmup, batch_size, device, every, no_wandb, reduce_at, stats_csv, json_path):
    """Training-step time bare vs gradlab (every step) vs wandb.watch, interleaved in one process.

    \b
    Example (CPU, a few minutes):
      gradlab bench overhead --model resnet56 --batch-size 128 --steps 3 --repeats 6
    What the gradient norms along depth cost alone:
      gradlab bench overhead --stats act_grad_norm --no-wandb
    """
    from gradlab.bench.overhead import run_overhead

    progress, close = _progress_printer()
    try:
        result = run_overhead(
            model=model,
            steps=steps,
            repeats=repeats,
            batch_size=batch_size,
            device=device,
            warmup=warmup,
            with_wandb=not no_wandb,
            every=every,
            reduce_at=reduce_at,
            stats=None if stats_csv is None else [n.strip() for n in stats_csv.split(",") if n.strip()],
            progress=progress,
        )
    finally:
        close()
    click.echo(format_overhead(result))
    _write_json(json_path, result)


def _write_json(json_path: Path | None, result: dict) -> None:
    if json_path is None:
        return
    from gradlab.runs import write_json

    write_json(json_path, result)
    click.echo(f"wrote {json_path}")


def _env_line(env: dict) -> str:
    return (f"device: {env['device']} ({env['device_name']}), torch {env['torch']}, "
            f"{env.get('torch_threads', '?')} threads, python {env['python']}")


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
    from gradlab.bench.throughput import run_throughput
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
    s = result["settings"]
    lines = [_env_line(result["environment"]),
             f"batch {s['batch_size']}, {s['steps']} steps x {s['repeats']} rounds per loop, interleaved; "
             f"reference: {s['reference_workers']} DataLoader workers, fp32 eager; gradlab: recording off", "",
             f"{'model':<12}{'gradlab img/s':>15}{'reference img/s':>17}{'ratio':>8}"]
    for name, r in result["results"].items():
        lines.append(f"{name:<12}{r['gradlab']['images_per_s']:>15.1f}{r['reference']['images_per_s']:>17.1f}"
                     f"{r['ratio']:>7.2f}x")
    if s["compile"]:
        lines += ["", f"gradlab compiled: torch.compile mode {s['compile_mode']}",
                  f"{'model':<12}{'compiled img/s':>15}{'x reference':>13}{'compile s':>11}"]
        for name, r in result["results"].items():
            c = r["gradlab-compiled"]
            lines.append(f"{name:<12}{c['images_per_s']:>15.1f}{r['ratio_compiled']:>12.2f}x{c['compile_s']:>11.1f}")
    click.echo("\n".join(lines))
    _write_json(json_path, result)


@bench.command("report")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1))
@click.option("--formats", default="pdf,png", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write all figures here.")
def report(repeats, formats, json_path):
    """Time and peak memory of a report at paper scale (6 runs x 64k steps, synthetic run directories)."""
    from gradlab.bench.report_bench import run_report_bench

    result = run_report_bench(repeats, formats)
    s, r = result["settings"], result["results"]
    click.echo(f"{s['runs']} runs x {s['steps']:,} steps, {s['recorded_steps']} recorded steps each, "
               f"layers.parquet {s['layers_parquet_mb']:.1f} MB in all; {s['repeats']} builds in fresh processes")
    click.echo(f"build time: median {r['median_s']:.2f} s (min {r['min_s']:.2f}, max {r['max_s']:.2f}); "
               f"peak memory {r['peak_rss_mb']:.0f} MB  [targets: <= 15 s, <= 2048 MB]")
    _write_json(json_path, result)


def format_overhead(result: dict) -> str:
    s, env = result["settings"], result["environment"]
    lines = [
        f"device: {env['device']} ({env['device_name']}), torch {env['torch']}, "
        f"{env['torch_threads']} threads, python {env['python']}",
        f"model: {s['model']}, batch {s['batch_size']}x{'x'.join(map(str, s['input_size']))}, "
        f"{s['steps']} steps x {s['repeats']} rounds per variant ({s['warmup']} warm-up), {s['order']}",
        f"gradlab: {s['gradlab']}; wandb: {s['wandb']}",
        "",
        f"{'variant':<10}{'median ms':>12}{'p25 ms':>10}{'p75 ms':>10}{'img/s':>10}{'x bare':>9}{'aten ops':>10}",
    ]
    for name, v in result["variants"].items():
        ratio = 1.0 if name == "bare" else result["ratios"][name]
        lines.append(
            f"{name:<10}{v['median_s'] * 1e3:>12.1f}{v['p25_s'] * 1e3:>10.1f}{v['p75_s'] * 1e3:>10.1f}"
            f"{v['images_per_s']:>10.1f}{ratio:>9.3f}{'-' if v['aten_ops'] is None else v['aten_ops']:>10}"
        )
    for name, why in result.get("skipped", {}).items():
        lines.append(f"{name:<10}skipped: {why}")
    spreads = result.get("round_ratios", {})
    if spreads:
        lines.append("")
        lines.append("x bare round by round (each round's median over bare's in the same round):")
        for name, r in spreads.items():
            ci = r.get("ci95")
            ci = f"95% CI of the median {ci[0]:.3f}-{ci[1]:.3f}" if ci else "too few rounds for a 95% CI (--repeats 6 or more)"
            lines.append(
                f"  {name:<8} median {r['median']:.3f}, min {r['min']:.3f}, max {r['max']:.3f} ({r['n']} rounds; {ci})"
            )
    return "\n".join(lines)


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
    from gradlab.bench.concurrency import run_concurrency
    from gradlab.models import info

    info(model)  # a bad name is a clear error before any work
    progress, close = _progress_printer()
    try:
        result = run_concurrency(model, runs, batch_size, steps, repeats, device=device, progress=progress)
    finally:
        close()
    s, r = result["settings"], result["results"]
    lines = [_env_line(result["environment"]),
             f"model: {s['model']}, batch {s['batch_size']} per run, {s['runs']} runs, {s['steps']} steps x "
             f"{s['repeats']} rounds per variant, interleaved; workers get {r['processes']['threads_per_worker']} "
             f"thread(s) each", "",
             f"{'variant':<12}{'runs':>6}{'total img/s':>13}{'x single':>10}"]
    lines.append(f"{'single':<12}{1:>6}{r['single']['images_per_s']:>13.1f}{1.0:>10.2f}")
    for v in ("processes", "stacked"):
        lines.append(f"{v:<12}{r[v]['runs']:>6}{r[v]['images_per_s']:>13.1f}{result['ratios'][v]:>10.2f}")
    lines.append(f"\nmore total images/s: {result['best']}")
    click.echo("\n".join(lines))
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
    Example (GPU, about three minutes on an H200, most of it compiling):
      gradlab bench paper --compile-mode reduce-overhead --json paper.json
    Example (CPU, a minute):
      gradlab bench paper --depths 20 --seconds 3 --warmup 1
    """
    from gradlab.bench.paper import run_paper
    from gradlab import families as fam
    from gradlab.cli.options import parse_int_list

    depth_list = parse_int_list(depths, "depths")
    family_list = fam.parse(families)
    progress, close = _progress_printer()
    try:
        result = run_paper(depth_list, family_list, batch_size=batch_size, seconds=seconds, warmup=warmup,
                           device=device, compile_mode=compile_mode, total_steps=total_steps, progress=progress)
    finally:
        close()
    click.echo(format_paper(result))
    _write_json(json_path, result)


def format_paper(result: dict) -> str:
    s, r = result["settings"], result["results"]
    compiled = f"torch.compile mode {s['compile_mode']}" if s["compile"] else "eager"
    threads = f", {s['threads_per_worker']} thread(s) each" if result["environment"]["device"] == "cpu" else ""
    lines = [_env_line(result["environment"]),
             f"{len(r)} run{'s' if len(r) != 1 else ''} at once, one process each{threads} ({compiled}), batch {s['batch_size']}, "
             f"{s['seconds']:g} s shared window after {s['warmup']} warm-up steps",
             f"per run: {s['total_steps']:,} steps, {s['recorded_steps']} of them recorded, "
             f"{s['evaluations']} evaluations of {s['eval_images']:,} images (recorded steps and evaluations timed "
             f"alone); startup: first step and first evaluation (compiling, when compiled)",
             "",
             f"{'run':<12}{'steps/s':>9}{'img/s':>9}{'startup s':>11}{'recorded s':>12}{'eval s':>9}{'minutes':>10}"]
    for name, v in r.items():
        lines.append(f"{name:<12}{v['steps_per_s_shared']:>9.2f}{v['images_per_s_shared']:>9.0f}"
                     f"{v['first_step_s'] + v['first_eval_s']:>11.2f}{v['recorded_step_s']:>12.3f}{v['eval_s']:>9.2f}"
                     f"{v['minutes_for_total']:>10.1f}")
    minutes = result["paper_compare_minutes"]
    lines += ["", f"all runs together: {result['total_images_per_s_shared']:.0f} img/s",
              f"paper compare: about {minutes:.0f} min ({minutes / 60:.1f} h), as long as its slowest run "
              f"({result['slowest']}) at its shared speed; long on the whole: the big runs speed up once the "
              f"small ones finish",
              f"all runs' steps at the measured total rate: {result['balanced_minutes']:.0f} min (short: the "
              f"device does not keep that rate once only the big runs are left)"]
    return "\n".join(lines)
