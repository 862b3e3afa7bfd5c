"""Time and peak memory of building a report at paper scale.

Six synthetic run directories (plain and ResNet at 20/56/110 layers, 64k iterations,
as many recorded steps as the trainer's default schedule writes, every default
statistic) are written once; then `build_report` runs in a fresh Python process per
repeat, so each timing includes imports and its peak resident memory is its own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from gradlab.families import PLAIN, RESNET

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from gradlab.report import build_report
result = build_report([sys.argv[1]], sys.argv[2], formats=sys.argv[3].split(","))
seconds = time.perf_counter() - t0
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
sys.stdout.write(json.dumps({"seconds": seconds, "peak_rss_mb": me / 1024, "peak_rss_children_mb": kids / 1024,
                  "files": len(result.files)}))
"""


def make_paper_scale_runs(root: Path, steps: int = 64_000, depths=(20, 56, 110)) -> dict:
    from gradlab.bench.synthetic_runs import make_run
    from gradlab.recorder.schedule import default_schedule

    n_records = default_schedule(steps).count(steps)
    dirs = [make_run(root, family, depth, 0, steps, experiment="paper-scale", n_records=n_records)
            for family in (PLAIN, RESNET) for depth in depths]
    size = sum((d / "layers.parquet").stat().st_size for d in dirs)
    return {"runs": len(dirs), "steps": steps, "recorded_steps": n_records, "layers_parquet_mb": size / 2**20}


def run_report_bench(repeats: int = 3, formats: str = "pdf,png", progress=None, steps: int = 64_000,
                     depths=(20, 56, 110)) -> dict:
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-report-") as tmp:
        tmp = Path(tmp)
        data = make_paper_scale_runs(tmp / "runs", steps, depths)
        trials = []
        for i in range(repeats):
            out = subprocess.run([sys.executable, "-c", CHILD, str(tmp / "runs"), str(tmp / f"report{i}"), formats],
                                 capture_output=True, text=True, check=True)
            trials.append(json.loads(out.stdout.strip().splitlines()[-1]))
            if progress:
                progress("report", i + 1, repeats)
    seconds = [t["seconds"] for t in trials]
    peak = [max(t["peak_rss_mb"], t["peak_rss_children_mb"]) for t in trials]
    return {
        "benchmark": "report",
        "settings": {"repeats": repeats, "formats": formats, **data},
        "results": {
            "median_s": statistics.median(seconds),
            "min_s": min(seconds),
            "max_s": max(seconds),
            "peak_rss_mb": max(peak),
            "trials": trials,
        },
        "targets": {"seconds": 15.0, "peak_mb": 2048.0},
    }


def format_result(result: dict) -> str:
    """The printout of :func:`run_report_bench`'s result: the runs, build time and peak memory."""
    s, r = result["settings"], result["results"]
    return (f"{s['runs']} runs x {s['steps']:,} steps, {s['recorded_steps']} recorded steps each, "
            f"layers.parquet {s['layers_parquet_mb']:.1f} MB in all; {s['repeats']} builds in fresh processes\n"
            f"build time: median {r['median_s']:.2f} s (min {r['min_s']:.2f}, max {r['max_s']:.2f}); "
            f"peak memory {r['peak_rss_mb']:.0f} MB  [targets: <= 15 s, <= 2048 MB]")
