"""Writing a long run: the time of a flush and the memory held, near the start and near the
end of a run recorded at every step (`gradlab bench long-run`).

A 12-layer pre-LN transformer (gradlab.bench.transformer: about a hundred watched
parameters and probe points) is watched with every default statistic at every step into
a run directory. After one real training step, its recorded row is committed again for
each later step number (synthetic steps: no forward or backward), so that a 100,000-step
run takes minutes and what is timed is the recorder's flush itself: derive the rows of the
buffered steps, hand them to the run directory's writer, write status.json.

Beside it, the same run through the baseline writer gradlab had before append-only
tables (2026-12-06): it holds every row in memory and rewrites the whole table at each
flush, which is why it runs for fewer steps. Each writer runs in a fresh process, so its
peak memory is its own.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

from gradlab import run_tables, runs
from gradlab.file_io import write_parquet
from gradlab.run_writer import RunWriter

__all__ = ["RewritingWriter", "format_result", "run_long_run", "time_flushes"]

WRITERS = ("append", "rewrite")
WINDOW = 0.1  # "near the start" and "near the end": the first and last tenth of the run's flushes


class RewritingWriter(RunWriter):
    """The baseline: keeps every layer row and rewrites layers.parquet whole at each write."""

    def __init__(self, run_dir, **options):
        super().__init__(run_dir, **options)
        self._all: pd.DataFrame | None = None
        self._new: list[pd.DataFrame] = []

    def add_layers(self, rows: pd.DataFrame) -> None:
        if len(rows):
            self._new.append(rows)
            self.last_step = max(self.last_step, int(rows["step"].max()))

    def write(self) -> bool:
        if not self._new:
            return False
        self._all = pd.concat([f for f in (self._all, *self._new) if f is not None], ignore_index=True)
        self._new = []
        write_parquet(self.run_dir / runs.LAYERS, self._all)
        return True


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_flushes(run_dir: Path, steps: int, writer: str = "append", buffer_steps: int = 64) -> dict:
    """Record ``steps`` steps of the transformer into ``run_dir`` through ``writer``; the time,
    step and peak memory of every flush, and of closing the run."""
    import torch.nn.functional as F

    from gradlab.bench.transformer import tiny_transformer
    from gradlab.recorder import watch

    make = RunWriter if writer == "append" else RewritingWriter
    w = make(run_dir, name="long-run", flush_seconds=None)
    model, (x, y) = tiny_transformer()
    rec = watch(model, every=1, buffer_steps=buffer_steps, run_dir=w)
    F.cross_entropy(model(x), y).backward()
    with warnings.catch_warnings():  # (attention's out_proj runs inside its module: said, and known here)
        warnings.simplefilter("ignore", RuntimeWarning)
        rec.step(0)  # a real step: row 0 of the buffer, replayed for every later step
    buffer = rec._inst.buffer
    row, written, numel = buffer.values[0].clone(), buffer.written[0].copy(), buffer.numel[0].copy()
    w.status(runs.RUNNING, 0)
    flushes, rows = [], 0
    for s in range(1, steps):
        buffer.row().copy_(row)
        buffer.written[buffer.count] = written
        if buffer.commit(s, numel) or s == steps - 1:
            start = time.perf_counter()
            rows += len(rec.flush())
            w.status(runs.RUNNING, s)
            flushes.append({"step": s, "seconds": time.perf_counter() - start, "peak_rss_mb": _rss_peak_mb()})
    start = time.perf_counter()
    rec.stop()
    w.close(runs.DONE, steps)
    close_s = time.perf_counter() - start
    size = sum(f.stat().st_size for f in run_tables.files(run_dir / runs.LAYERS))
    return {"writer": writer, "steps": steps, "rows": rows, "flushes": flushes, "close_s": close_s,
            "layers_mb": size / 2**20, "peak_rss_mb": _rss_peak_mb()}


CHILD = r"""
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[4]))
from gradlab.bench.long_run import time_flushes
sys.stdout.write(json.dumps(time_flushes(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])))
"""


def _windows(result: dict) -> dict:
    """Median and largest flush time, and peak memory, over the first and the last tenth."""
    flushes = result["flushes"][1:]  # the first flush also builds the writers' plans
    k = max(1, int(len(flushes) * WINDOW))
    out = {}
    for name, part in (("start", flushes[:k]), ("end", flushes[-k:])):
        times = [f["seconds"] for f in part]
        out[name] = {"steps": [part[0]["step"], part[-1]["step"]], "median_s": statistics.median(times),
                     "max_s": max(times), "peak_rss_mb": part[-1]["peak_rss_mb"]}  # fmt: skip
    out["end_over_start"] = out["end"]["median_s"] / out["start"]["median_s"]
    return out


def run_long_run(steps: int = 100_000, baseline_steps: int = 4_000, threads: int = 1, progress=None) -> dict:
    """Both writers, one after the other, each in a fresh process."""
    results = {}
    plan = [("append", steps)] + ([("rewrite", baseline_steps)] if baseline_steps else [])
    for i, (writer, n) in enumerate(plan):
        with tempfile.TemporaryDirectory(prefix="gradlab-bench-long-run-") as tmp:
            out = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "run"), str(n), writer, str(threads)],
                                 capture_output=True, text=True)  # fmt: skip
            if out.returncode != 0:
                raise RuntimeError(f"the {writer} writer's run failed:\n{out.stderr[-2000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
        result["windows"] = _windows(result)
        results[writer] = result
        if progress:
            progress("long-run", i + 1, len(plan))
    first = results["append"]
    return {"benchmark": "long-run",
            "settings": {"model": "12-layer pre-LN transformer, width 32 (gradlab.bench.transformer)",
                         "rows_per_step": first["rows"] / first["steps"], "buffer_steps": 64, "threads": threads,
                         "window": WINDOW},
            "results": results, "targets": {"end_over_start": 1.5}}  # fmt: skip


def format_result(result: dict) -> str:
    """The printout of :func:`run_long_run`: per writer, a flush and the peak memory near the
    start and near the end, and what closing the run took."""
    s = result["settings"]
    lines = [f"{s['model']}: {s['rows_per_step']:.0f} rows a step, every step recorded, a flush every "
             f"{s['buffer_steps']} steps; near the start / end = the first / last {s['window']:.0%} of the flushes",
             f"{'writer':<22} {'steps':>8} {'flush, start':>13} {'flush, end':>11} {'end/start':>9} "
             f"{'peak RSS start':>15} {'end':>8} {'close':>8}"]  # fmt: skip
    names = {"append": "append-only (gradlab)", "rewrite": "rewrite all (before)"}
    for writer, r in result["results"].items():
        w = r["windows"]
        lines.append(f"{names[writer]:<22} {r['steps']:>8,} {w['start']['median_s'] * 1e3:>10.1f} ms "
                     f"{w['end']['median_s'] * 1e3:>8.1f} ms {w['end_over_start']:>9.2f} "
                     f"{w['start']['peak_rss_mb']:>12.0f} MB {w['end']['peak_rss_mb']:>5.0f} MB {r['close_s']:>6.1f} s")
    a = result["results"]["append"]["windows"]
    lines.append(f"append-only, largest flush near the start / end (merging parts): {a['start']['max_s'] * 1e3:.0f} / "
                 f"{a['end']['max_s'] * 1e3:.0f} ms  [target: end/start <= {result['targets']['end_over_start']}]")
    return "\n".join(lines)
