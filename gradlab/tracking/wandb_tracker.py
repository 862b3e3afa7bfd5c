"""Weights & Biases tracking. All W&B code of gradlab lives here.

One W&B run per gradlab run: config = the resolved spec, group = the experiment,
job_type = train, tags = family, depth, arch, dataset and build options ("no norm", "sigmoid"). Every metric is plotted against
gradlab's own `step`. Scalars go out at the evaluation cadence; per-layer statistics at
the recorder's flush cadence, one `log` call per recorded step, under stable names such
as `grad_norm/007.layer1.0.conv1.weight`. The W&B run id is kept in the run directory
(wandb.json), so a resumed gradlab run resumes the same W&B run.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd

from gradlab.callbacks import Callback
from gradlab.tracking.common import TrackingError, finite, layer_key

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
ID_FILE = "wandb.json"


def resolve_mode(flag: str | None) -> str:
    """--wandb wins, then WANDB_MODE, else disabled."""
    mode = flag or os.environ.get("WANDB_MODE") or "disabled"
    if mode == "dryrun":
        mode = "offline"
    if mode not in MODES:
        raise TrackingError(f"unknown W&B mode '{mode}'; use --wandb online, offline or disabled")
    return mode


def check_credentials(mode: str) -> None:
    """In online mode, fail before training when no API key is configured."""
    if mode != "online":
        return
    import wandb

    before = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "online"  # with WANDB_MODE=offline, login would not look for a key
    try:
        wandb.login(verify=False)
    except Exception as e:  # wandb raises UsageError (no key) and others
        raise TrackingError(
            f"W&B online mode needs credentials ({e}); run `wandb login` or set WANDB_API_KEY, "
            f"or use --wandb offline now and `wandb sync <run folder>` later"
        ) from e
    finally:
        if before is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = before


class WandbTracker(Callback):
    def __init__(self, mode: str = "offline", project: str = "gradlab", entity: str | None = None,
                 directory: str | Path | None = None):
        self.mode = mode
        self.project = project
        self.entity = entity
        self.directory = str(directory) if directory else None
        self.run = None

    def on_start(self, run_dir: Path, spec: dict, resumed: bool) -> None:
        if self.mode == "disabled":
            return
        import wandb

        id_file = Path(run_dir) / ID_FILE
        known = json.loads(id_file.read_text(encoding="utf-8")) if id_file.exists() else {}
        model = spec.get("model", {})
        self.run = wandb.init(
            project=known.get("project", self.project),
            entity=known.get("entity", self.entity),
            id=known.get("id"),
            resume="allow" if known.get("id") else None,
            name=spec.get("name"),
            group=spec.get("experiment"),
            job_type="train",
            tags=[t for t in (model.get("family"), f"depth{model.get('depth')}", model.get("arch"),
                              spec.get("data", {}).get("name"), *model.get("variant", "").split(", ")) if t],
            config=spec,
            dir=self.directory,
            mode=self.mode,
            reinit="create_new",
        )
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        if not known:
            from gradlab.file_io import write_json

            write_json(id_file, {"id": self.run.id, "project": self.project, "entity": self.entity})

    def on_eval(self, run_dir: Path, row: dict) -> None:
        if self.run is None:
            return
        scalars = {k: v for k, v in row.items() if k not in ("step",) and finite(v)}
        self.run.log({"step": int(row["step"]), **scalars})

    def on_layers(self, run_dir: Path, frame: pd.DataFrame) -> None:
        if self.run is None or frame.empty:
            return
        keys = [layer_key(s, i, l) for s, i, l in zip(frame["stat"], frame["index"], frame["layer"])]
        wide = pd.DataFrame({"step": frame["step"].to_numpy(), "key": keys, "value": frame["value"].to_numpy()})
        for step, group in wide.groupby("step", sort=True):
            values = {k: float(v) for k, v in zip(group["key"], group["value"]) if finite(v)}
            self.run.log({"step": int(step), **values})

    def on_finding(self, run_dir: Path, finding) -> None:
        """A W&B alert (email/Slack as the project's alerts are set up), at its severity."""
        if self.run is None:
            return
        import wandb

        level = {"error": wandb.AlertLevel.ERROR, "warning": wandb.AlertLevel.WARN}.get(finding.severity,
                                                                                      wandb.AlertLevel.INFO)
        self.run.alert(title=f"gradlab: {finding.rule} in {finding.run}", level=level,
                       text=f"{finding.summary} ({finding.when}; {finding.where_text}). {finding.evidence}")

    def on_end(self, run_dir: Path, state: str, message: str) -> None:
        if self.run is None:
            return
        from gradlab import run_tables
        from gradlab.runs import METRICS, read_status

        summary = {"state": state}
        if message:
            summary["message"] = message
        metrics = run_tables.read(Path(run_dir) / METRICS)
        if metrics is not None:
            for column in ("train_err", "test_err", "val_err", "train_loss"):
                values = metrics[column].dropna() if column in metrics else []
                if len(values):
                    summary[f"final_{column}"] = float(values.iloc[-1])
        status = read_status(run_dir)
        if status.get("diverged_step") is not None:
            summary["diverged_step"] = status["diverged_step"]
        self.run.summary.update(summary)
        self.run.finish(exit_code=0 if state in ("done", "diverged") else 1)
        self.run = None


def log_report(report, experiment: str, mode: str = "offline", project: str = "gradlab",
               entity: str | None = None, directory: str | Path | None = None) -> None:
    """A report-type W&B run: the report's figures as images and its table as a wandb.Table."""
    if mode == "disabled":
        return
    import wandb

    run = wandb.init(project=project, entity=entity, group=experiment, job_type="report",
                     name=f"{experiment}-report", dir=str(directory) if directory else None, mode=mode,
                     reinit="create_new")
    images = {f"figures/{p.stem}": wandb.Image(str(p)) for p in report.files if p.suffix == ".png"}
    if images:
        run.log(images)
    table = getattr(report, "table", None)
    if table is not None and not table.empty:
        run.log({"results": wandb.Table(dataframe=table.astype(str))})
    run.summary.update({"summary": " ".join(report.summary), "warnings": len(report.warnings)})
    run.finish()
