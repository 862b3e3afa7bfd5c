"""`gradlab bench`: speed and overhead measurements (subcommands register on this group)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


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
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1), help="Interleaved rounds.")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0), help="Untimed steps per variant first.")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps.")
@click.option("--every", default=1, show_default=True, type=click.IntRange(1), help="gradlab records every N-th step.")
@click.option("--no-wandb", is_flag=True, help="Skip the wandb.watch variant.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write all figures here.")
def overhead(model, steps, repeats, warmup, batch_size, device, every, no_wandb, json_path):
    """Training-step time bare vs gradlab (every step) vs wandb.watch, interleaved in one process.

    \b
    Example (CPU, a few minutes):
      gradlab bench overhead --model resnet56 --batch-size 128 --steps 3 --repeats 5
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
            progress=progress,
        )
    finally:
        close()
    click.echo(format_overhead(result))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_path}")


def format_overhead(result: dict) -> str:
    s, env = result["settings"], result["environment"]
    lines = [
        f"device: {env['device']} ({env['device_name']}), torch {env['torch']}, "
        f"{env['torch_threads']} threads, python {env['python']}",
        f"model: {s['model']}, batch {s['batch_size']}x{'x'.join(map(str, s['input_size']))}, "
        f"{s['steps']} steps x {s['repeats']} rounds per variant ({s['warmup']} warm-up), {s['order']}",
        f"gradlab: {s['gradlab']}; wandb: {s['wandb']}",
        "",
        f"{'variant':<10}{'median ms':>12}{'p25 ms':>10}{'p75 ms':>10}{'img/s':>10}{'x bare':>9}",
    ]
    for name, v in result["variants"].items():
        ratio = 1.0 if name == "bare" else result["ratios"][name]
        lines.append(
            f"{name:<10}{v['median_s'] * 1e3:>12.1f}{v['p25_s'] * 1e3:>10.1f}{v['p75_s'] * 1e3:>10.1f}"
            f"{v['images_per_s']:>10.1f}{ratio:>9.3f}"
        )
    for name, why in result.get("skipped", {}).items():
        lines.append(f"{name:<10}skipped: {why}")
    return "\n".join(lines)
