"""What recording costs: the same training step bare, with gradlab, and with wandb.watch.

Three copies of one model (same initial weights, same synthetic CIFAR-shaped batch) train
in one process, interleaved in rounds whose order changes so that no variant always
follows the same one (gradlab.bench.timing.round_order):

* ``bare``:    forward, backward, SGD step.
* ``gradlab``: the same with ``gradlab.watch(model, every=1)`` (all default statistics,
  every step: the worst case; the default schedule records one step in 50, and
  ``every=`` measures other intervals).
* ``wandb``:   the same with ``wandb.watch(model, log="gradients", log_freq=1)`` and a
  ``wandb.log`` per step, in offline mode in a temporary directory.

Step times are compared by their medians (see gradlab.bench.timing); round by round the
ratio moves with the machine's other load, so the printout gives a confidence interval of
the median ratio, which ``--repeats`` narrows. Measured figures, and what each change to
the recorder did to them: README.md ("Performance"), docs/recorder.md and
reports/recorder-overhead.md.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Sequence

from gradlab.bench.overhead_cases import DEFAULT_CASES, TRANSFORMER, Case, build_case, parse_cases
from gradlab.bench.overhead_variants import findings_variant, trainer, wandb_variant
from gradlab.bench.timing import (
    aten_ops,
    describe_environment,
    environment_line,
    interleaved,
    round_ratios,
    spread,
    summarize,
    synchronize,
)
from gradlab import stat_names as S
from gradlab.environment import resolve_device
from gradlab.errors import ConfigError
from gradlab.recorder import native

__all__ = ["VARIANTS", "format_cases", "format_result", "run_overhead", "run_overhead_cases"]

VARIANTS = ("bare", "gradlab", "findings", "wandb")





REDUCTIONS_TEXT = {"hooks": "reductions in the hooks", "step": "reductions deferred to step()",
                   "mixed": "small tensors reduced at step(), large ones in the hooks"}


def _stats_phrase(stats: tuple[str, ...]) -> str:
    return "all default stats" if stats == S.DEFAULT_STATS else "stats " + ",".join(stats)


def _ops_or_none(step: Callable[[], None]) -> int | None:
    """ATen operators of one more step; None if counting fails (the timings stand anyway)."""
    try:
        return aten_ops(step)
    except Exception:  # a side figure: never lose the measured timings for it
        return None


def run_overhead(
    model: str = "resnet56",
    steps: int = 5,
    repeats: int = 6,
    batch_size: int | None = None,
    device: str = "auto",
    warmup: int = 2,
    with_wandb: bool = True,
    with_lightning: bool = False,
    with_findings: bool = False,
    flush_every: int = 64,
    every: int = 1,
    reduce_at: str = "auto",
    stats: Sequence[str] | None = None,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Time training steps of one case (gradlab.bench.overhead_cases: a zoo model or
    ``transformer``, ``@N`` for its batch) bare, with gradlab (every step) and with wandb.watch.

    Returns a dict with ``settings``, ``environment``, per-variant ``variants`` (median,
    quartiles and min step time in seconds, images/s) and ``ratios`` (median step time over
    bare's). A variant that cannot run (wandb missing or failing) is listed under
    ``skipped`` with the reason. ``stats``: the statistics gradlab records (None: all
    default ones), to measure what a selection costs. ``with_lightning``: also time a bare
    Lightning step against one with gradlab's Lightning callback (gradlab.bench.
    lightning_overhead), under ``lightning``. ``with_findings``: also time gradlab writing a run
    directory with the findings rules at each flush, every ``flush_every`` recorded steps (a
    run's default, 64: time more steps than that to include flushes) (``findings``).
    """
    checks = (("steps", steps, 1), ("repeats", repeats, 1), ("batch_size", batch_size or 1, 1), ("warmup", warmup, 0),
              ("every", every, 1))  # fmt: skip
    for name, value, least in checks:
        if value < least:
            raise ConfigError(f"{name} must be >= {least}, not {value}.")
    stats = S.checked(stats)
    dev = resolve_device(device)
    ((name, arch, size),) = parse_cases(model, batch_size)
    case = build_case(name, arch, size, dev, seed)
    base = case.net
    timed = _timed(case, dev, steps, repeats, warmup, every, reduce_at, stats, with_wandb, with_findings, flush_every,
                   progress)  # fmt: skip
    variants, timings, ops, rows, findings_checks, reductions, skipped = timed
    lightning = None
    if with_lightning:
        lightning = _lightning(base, case, steps, repeats, warmup, every, dev, progress, skipped)
    summary = {}
    for name in variants:
        s = summarize(timings.steps[name])
        s["images_per_s"] = case.batch_size / s["median_s"]
        s["aten_ops"] = ops[name]
        summary[name] = s
    bare = summary["bare"]["median_s"]
    gradlab_text = (f"gradlab.watch(model, every={every}, dense_until=0, reduce_at={reduce_at!r}), "
                    f"{_stats_phrase(stats)}, {REDUCTIONS_TEXT[reductions]}")  # fmt: skip
    if dev.type == "cpu":
        gradlab_text += f"; {native.status()}"
    settings = _settings(case, steps, repeats, warmup, variants, gradlab_text, stats, reductions, every,
                         flush_every if with_findings else None, dev, seed)  # fmt: skip
    return {
        "settings": settings,
        "environment": describe_environment(dev),
        "variants": summary,
        "ratios": {name: summary[name]["median_s"] / bare for name in summary if name != "bare"},
        "round_ratios": {
            name: spread(round_ratios(timings, name, "bare", steps)) for name in summary if name != "bare"
        },
        "gradlab_rows": rows,
        "findings_checks": findings_checks,
        "skipped": skipped,
        "lightning": lightning,
    }


def _timed(case: Case, dev, steps, repeats, warmup, every, reduce_at, stats, with_wandb, with_findings, flush_every,
           progress) -> tuple:  # fmt: skip
    """Build the variants on copies of the case's model and time them interleaved. Returns
    (variant names, timings, ATen ops per variant, gradlab's rows, the findings' checks,
    gradlab's reductions, the variants skipped and why)."""
    import gradlab

    base = case.net
    variants: dict[str, Callable[[], None]] = {"bare": trainer(copy.deepcopy(base), case)}
    rec_model = copy.deepcopy(base)
    rec = gradlab.watch(rec_model, every=every, dense_until=0, reduce_at=reduce_at, stats=stats)
    variants["gradlab"] = trainer(rec_model, case, rec.step)
    skipped: dict[str, str] = {}
    live = None
    with contextlib.ExitStack() as stack:
        if with_findings:
            variants["findings"], live = findings_variant(stack, base, case, every, reduce_at, stats, flush_every)
        if with_wandb:
            wandb_step = wandb_variant(stack, base, case, skipped)
            if wandb_step is not None:
                variants["wandb"] = wandb_step
        else:
            skipped["wandb"] = "disabled (--no-wandb)"
        try:
            timings = interleaved(variants, steps=steps, repeats=repeats, device=dev, warmup=warmup, progress=progress)
            findings_checks = None if live is None else live.checks  # (timed and warm-up steps; stop() checks again)
            synchronize(dev)
            rows = len(rec.frame())
            next_recorded = rec.current_step
            while not rec.schedule(next_recorded):
                next_recorded += 1
            rec.set_step(next_recorded)  # gradlab's counted step is a recorded one, whatever --every
            ops = {name: _ops_or_none(fn) for name, fn in variants.items()}  # one more step each
        finally:
            rec.stop()
    return list(variants), timings, ops, rows, findings_checks, rec.reductions, skipped


def _settings(case: Case, steps: int, repeats: int, warmup: int, variants: list[str], gradlab_text: str, stats,
              reductions: str, every: int, flush_every: int | None, dev, seed: int) -> dict:  # fmt: skip
    """What :func:`run_overhead` timed, as its result's ``settings`` say it (``flush_every``: None
    without the findings variant)."""
    findings = None if flush_every is None else (
        "the same gradlab.watch writing a run directory, findings=True: the rules run at each flush, "
        f"every {flush_every} recorded steps (a run's default: 64, or 30 s)")  # fmt: skip
    return {
        "case": case.name,
        "model": case.model,
        "batch_size": case.batch_size,
        "input_size": case.input_size,
        "input": case.input_text,
        "steps": steps,
        "repeats": repeats,
        "warmup": warmup,
        "timed_steps_per_variant": steps * repeats,
        "order": "interleaved, in a balanced order changing from round to round: " + ", ".join(variants),
        "optimizer": "SGD(lr=0.1, momentum=0.9, weight_decay=1e-4)",
        "gradlab": gradlab_text,
        "stats": list(stats),
        "reductions": reductions,
        "every": every,
        "wandb": ('wandb.watch(model, log="gradients", log_freq=1), offline, one wandb.log per step'
                  if "wandb" in variants else "not timed"),
        "findings": findings,
        "flush_every": flush_every or 64,
        "device": str(dev),
        "seed": seed,
    }


def run_overhead_cases(models: str = DEFAULT_CASES, batch_size: int | None = None, **options) -> dict:
    """:func:`run_overhead` for each case of ``models`` ('resnet56,transformer,resnet20@8'), one
    after the other; every case is checked before the first is timed."""
    cases = parse_cases(models, batch_size)
    for _, arch, _ in cases:
        if arch != TRANSFORMER:
            from gradlab.models import info

            info(arch.partition(":")[0])  # an unknown name is an error now, not after the first case's minutes
    return {"benchmark": "overhead", "cases": [run_overhead(name, batch_size=size, **options)
                                               for name, _, size in cases]}  # fmt: skip








def _lightning(base, case: Case, steps, repeats, warmup, every, dev, progress, skipped: dict) -> dict | None:
    """The same step in a Lightning fit, bare and with gradlab's callback (None: no lightning)."""
    try:
        from gradlab.bench.lightning_overhead import run_lightning_overhead

        nets = {"lightning": copy.deepcopy(base), "lightning+gradlab": copy.deepcopy(base)}
        lightning = run_lightning_overhead(nets, case.x, case.y, steps, repeats, warmup, every, dev, progress)
    except ImportError as e:  # lightning is an optional extra
        skipped["lightning"] = f"{type(e).__name__}: {e} (pip install 'gradlab[lightning]')"
        return None
    for v in lightning["variants"].values():
        v["images_per_s"] = case.batch_size / v["median_s"]
    lv = lightning["variants"]
    lightning["ratio"] = lv["lightning+gradlab"]["median_s"] / lv["lightning"]["median_s"]
    lightning["round_ratios"] = spread(lightning["round_ratios"])
    return lightning


def format_result(result: dict) -> str:
    """The printout of :func:`run_overhead`'s result: settings, a table of variants, round-by-round ratios."""
    s, env = result["settings"], result["environment"]
    lines = [
        environment_line(env),
        f"model: {s['model']}, {s['input']}, "
        f"{s['steps']} steps x {s['repeats']} rounds per variant ({s['warmup']} warm-up), {s['order']}",
        f"gradlab: {s['gradlab']}; wandb: {s['wandb']}",
        *([f"findings: {s['findings']}; the rules ran {result['findings_checks']} times (warm-up included)",
           _findings_mean_text(result)] if s.get("findings") else []),
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
            lines.append(f"  {name:<9}{_spread_text(r)}")
    lightning = result.get("lightning")
    if lightning:
        lines += ["", f"Lightning: {lightning['settings']}",
                  f"{'variant':<18}{'median ms':>10}{'p25 ms':>10}{'p75 ms':>10}{'img/s':>10}{'x lightning':>13}"]
        for name, v in lightning["variants"].items():
            ratio = lightning["ratio"] if name != "lightning" else 1.0
            lines.append(f"{name:<18}{v['median_s'] * 1e3:>10.1f}{v['p25_s'] * 1e3:>10.1f}{v['p75_s'] * 1e3:>10.1f}"
                         f"{v['images_per_s']:>10.1f}{ratio:>13.3f}")
        lines.append("  x lightning round by round: " + _spread_text(lightning["round_ratios"]))
    return "\n".join(lines)


def _findings_mean_text(result: dict) -> str:
    """The findings variant's mean step against bare's (its flushes and checks fall on one
    step in ``flush_every``, which a median leaves out), and what that makes a flush cost at
    a run's default of one every 64 recorded steps."""
    v, every = result["variants"], result["settings"]["flush_every"]
    if not result["findings_checks"]:
        return (f"findings: no flush fell in the timed steps, so their cost is not in these figures; time more than "
                f"--flush-every {every} steps (--steps x --repeats)")  # fmt: skip
    f, g, b = v["findings"]["mean_s"], v["gradlab"]["mean_s"], v["bare"]["mean_s"]
    head = (f"findings, mean step (the flushes and checks included): {f * 1e3:.1f} ms against bare's "
            f"{b * 1e3:.1f} ms, {f / b:.3f}x; gradlab without them {g / b:.3f}x: ")  # fmt: skip
    flush = (f - g) * every
    if flush <= 0:  # the flushes' cost is smaller than the steps' noise: no estimate to give
        return head + "the flushes and checks cost less than the noise between rounds (the mean with them is not above it)"
    return head + (f"a flush with its check costs about {flush * 1e3:.0f} ms, {(g + flush / 64) / b:.3f}x bare at a "
                   "run's default flush every 64 steps")  # fmt: skip


def _spread_text(r: dict) -> str:
    ci = r.get("ci95")
    ci = f"95% CI of the median {ci[0]:.3f}-{ci[1]:.3f}" if ci else "too few rounds for a 95% CI (--repeats 6 or more)"
    return f"median {r['median']:.3f}, min {r['min']:.3f}, max {r['max']:.3f} ({r['n']} rounds; {ci})"


def format_cases(result: dict) -> str:
    """The printout of :func:`run_overhead_cases`: each case, then the cases side by side."""
    cases = result["cases"]
    blocks = [format_result(r) for r in cases]
    lines = ["", "cases side by side (x bare: the medians' ratio; round by round, its median and 95% CI):",
             f"{'case':<16}{'variant':<10}{'bare ms':>10}{'variant ms':>12}{'x bare':>8}   round by round"]
    for r in cases:
        v = r["variants"]
        for name in (n for n in ("gradlab", "findings") if n in v):
            rr = r["round_ratios"][name]
            ci = rr["ci95"]
            lines.append(f"{r['settings']['case']:<16}{name:<10}{v['bare']['median_s'] * 1e3:>10.2f}"
                         f"{v[name]['median_s'] * 1e3:>12.2f}{r['ratios'][name]:>8.3f}   {rr['median']:.3f}"
                         + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else ""))
    return "\n\n".join(blocks) + "\n" + "\n".join(lines)
