"""Read an offline W&B run back from its .wandb file (a LevelDB-style log of protobuf
records, the format `wandb sync` uploads), so tests can check what was logged."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7  # ":W&B" + magic + version; each record chunk: crc32, length, type


def _chunks(data: bytes):
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 0:
            break
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_offline_run(run_folder: Path, wait_s: float = 60.0) -> dict:
    """{"run": RunRecord, "config": {...}, "history": [rows], "summary": {...}, "alerts": [...]} of one
    offline run. ``run.finish()`` may return before wandb's writer has put the last records
    down (seen on a busy machine): the file is read again until it holds the run's exit
    record, for at most ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        out = _read(run_folder)
        if out["exited"] or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def _read(run_folder: Path) -> dict:
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = Path(run_folder).glob("run-*.wandb")
    out = {"run": None, "config": {}, "history": [], "summary": {}, "alerts": [], "exited": False}
    for raw in _chunks(path.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
            out["config"].update({_key(u): json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            out["config"].update({_key(u): json.loads(u.value_json) for u in rec.config.update})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({_key(u): json.loads(u.value_json) for u in rec.summary.update})
        elif kind == "exit":
            out["exited"] = True
        elif kind == "alert":
            out["alerts"].append({"title": rec.alert.title, "text": rec.alert.text, "level": rec.alert.level})
    return out


def offline_runs(wandb_dir: Path) -> list[Path]:
    return sorted(Path(wandb_dir).rglob("offline-run-*"), key=lambda p: p.name)
