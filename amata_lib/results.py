"""Runs saved as JSON with provenance, written atomically and validated on load.

Schema ``amata-run/1``::

    {"schema": "amata-run/1",
     "provenance": {"library_version", "git_commit", "torch_version", "python", "platform",
                    "device", "created", "command", ...},
     "seed": int, "dataset": str, "config": {...}, "history": [ {...}, ... ]}
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

SCHEMA = "amata-run/1"
REQUIRED = {"schema": str, "provenance": dict, "seed": int, "dataset": str, "config": dict, "history": list}
PROVENANCE_KEYS = ("library_version", "git_commit", "torch_version", "device", "created")


class ResultError(ValueError):
    """A results file is unreadable, corrupt or not an amata-run file."""


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """Commit of the checkout holding ``path`` (this package by default), with ``+dirty`` if modified."""
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def device_name(device: str | torch.device = "cpu") -> str:
    """Human-readable name of the device: the GPU model, or the CPU and its core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{device.type}: {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def provenance(device: str | torch.device = "cpu", command: str | None = None) -> dict:
    """Where and how a result was produced."""
    from . import __version__

    return {
        "library_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device_name(device),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` via a temporary file and ``os.replace``: all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(data), indent=1, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_run(path: str | os.PathLike, *, config: dict, history: list[dict], seed: int, dataset: str,
             device: str | torch.device = "cpu", command: str | None = None, report: dict | None = None) -> Path:
    """Save one run (config, history, provenance and an optional final ``report``) as ``amata-run/1`` JSON, atomically."""
    record = {"schema": SCHEMA, "provenance": provenance(device, command), "seed": seed,
              "dataset": dataset, "config": config, "history": history}
    if report is not None:
        record["report"] = report
    validate(record)
    return write_json_atomic(path, record)


def validate(record: Any, source: str = "record") -> dict:
    """Check the ``amata-run/1`` schema; raise :class:`ResultError` naming what is wrong."""
    if not isinstance(record, dict):
        raise ResultError(f"{source}: expected a JSON object, got {type(record).__name__}")
    if record.get("schema") != SCHEMA:
        raise ResultError(f"{source}: not an amata run (schema {record.get('schema')!r}, expected {SCHEMA!r})")
    for key, kind in REQUIRED.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise ResultError(f"{source}: field {key!r} must be {kind.__name__}, got {record.get(key)!r:.60}")
    missing = [k for k in PROVENANCE_KEYS if k not in record["provenance"]]
    if missing:
        raise ResultError(f"{source}: provenance lacks {missing}")
    for i, rec in enumerate(record["history"]):
        if not isinstance(rec, dict) or not {"epoch", "time", "passes"} <= rec.keys():
            raise ResultError(f"{source}: history[{i}] must be an object with epoch, time and passes")
    return record


def load_run(path: str | os.PathLike) -> dict:
    """Load and validate a run saved by :func:`save_run`."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path}: not valid JSON ({exc})") from None
    return validate(record, str(path))
