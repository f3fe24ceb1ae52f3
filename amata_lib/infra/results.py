"""Runs saved as JSON with provenance, written atomically and validated on load.

Schema ``amata-run/1``::

    {"schema": "amata-run/1",
     "provenance": {"library_version", "git_commit", "torch_version", "python", "platform",
                    "device", "created", "command", ...},
     "seed": int, "dataset": str, "config": {...}, "history": [ {...}, ... ]}
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
from numbers import Real
from pathlib import Path
from typing import Any, Iterable

import torch

from .checkpoints import differences
from .errors import UserError
from .io import atomic_write
from .version import VERSION

SCHEMA = "amata-run/1"
REQUIRED = {"schema": str, "provenance": dict, "seed": int, "dataset": str, "config": dict, "history": list}
PROVENANCE_KEYS = ("library_version", "git_commit", "torch_version", "device", "created")
HISTORY_FIELDS = {"epoch": int, "steps": int, "time": Real, "passes": Real, "layer_passes": Real,
                  "train_loss": Real, "clean_acc": Real, "robust_acc": Real, "fgsm_acc": Real}


class ResultError(UserError):
    """A results file is unreadable, corrupt or not an amata-run file."""


LIBRARY = Path(__file__).resolve().parent


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """Commit of the checkout holding ``path`` (this package by default); ``None`` outside a git checkout.

    Uncommitted changes are not marked here: :func:`library_state` says whether the
    library's own source (``amata_lib/``) differs from this commit, which is what
    decides the numbers a run produces.
    """
    return _git(["rev-parse", "HEAD"], Path(path) if path is not None else LIBRARY)


def library_sha256(root: str | os.PathLike | None = None) -> str:
    """SHA-256 of the library's source as it is on disk: every ``.py`` and ``.json`` file under ``amata_lib/``.

    Files are taken in sorted relative-path order, each as its path, a NUL byte, its
    bytes and a NUL byte; caches (``__pycache__``) are skipped. Tests, the book and
    results are outside ``amata_lib/`` and do not enter the hash.
    """
    root = Path(root) if root is not None else LIBRARY
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.suffix in (".py", ".json") and p.is_file()
                   and "__pycache__" not in p.parts)
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def library_state(root: str | os.PathLike | None = None) -> dict:
    """The library's source as a run uses it: commit, source hash and whether ``amata_lib/`` has uncommitted changes.

    ``library_dirty`` is ``True`` when a file under ``amata_lib/`` is modified, staged or
    untracked relative to ``git_commit``; ``None`` outside a git checkout (an installed
    wheel), where ``library_sha256`` alone identifies the code.
    """
    root = Path(root) if root is not None else LIBRARY
    commit = git_commit(root)
    status = None if commit is None else _git(["status", "--porcelain", "--untracked-files=all", "--", "."], root)
    return {"git_commit": commit, "library_sha256": library_sha256(root),
            "library_dirty": None if status is None else bool(status)}


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

    return {
        "library_version": VERSION,
        **library_state(),
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
    """Write ``data`` as JSON to ``path``, all or nothing (see :func:`amata_lib.infra.io.atomic_write`)."""
    text = json.dumps(_clean(data), indent=1, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_run(path: str | os.PathLike, *, config: dict, history: list[dict], seed: int, dataset: str,
             device: str | torch.device = "cpu", command: str | None = None, report: dict | None = None) -> Path:
    """Save one run (config, history, provenance, optional final ``report``) as ``amata-run/1`` JSON, atomically."""
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
        for key, kind in HISTORY_FIELDS.items():
            value = rec.get(key)
            if value is None and key in ("epoch", "time", "passes"):
                raise ResultError(f"{source}: history[{i}].{key} must be a number, got None")
            if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
                what = "an integer" if kind is int else "a number"
                raise ResultError(f"{source}: history[{i}].{key} must be {what} or null, got {value!r:.40}")
    return record


def _moved_hint(path: Path) -> str:
    """Where a result named by its place before amata_lib 0.3 lives now (``""`` if nowhere)."""
    folder = path.parent.name
    experiment, sep, seed = folder.rpartition("-seed")
    candidates = [path.parent.parent / experiment / f"seed{seed}" / path.name] if sep and seed.isdigit() else []
    candidates += sorted(path.parent.glob(f"seed*/{path.name}"))
    found = [c for c in candidates if c.is_file()]
    return f"; results moved to one folder per experiment: see {found[0]}" if found else ""


def load_run(path: str | os.PathLike) -> dict:
    """Load and validate a run saved by :func:`save_run`."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultError(f"{path}: no such file{_moved_hint(path)}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path}: not valid JSON ({exc})") from None
    return validate(record, str(path))


def finished_result(path: str | os.PathLike, config: dict, *, ignore: Iterable[str] = ()) -> bool:
    """Whether ``path`` already holds the run described by ``config``; a result of other settings is an error.

    Every key of ``config`` (except ``ignore``) must equal the stored config's, so a
    finished result is never overwritten by, or taken for, a run with other settings.
    ``train`` and ``experiment`` both call this before they train.

    Raises
    ------
    ResultError
        ``path`` holds a result made with other settings (the message lists them), or is no result.
    """
    path = Path(path)
    if not path.exists():
        return False
    stored = load_run(path)["config"]
    wanted = json.loads(json.dumps(_clean({k: v for k, v in config.items() if k not in set(ignore)})))
    diff = differences({k: stored.get(k, "<absent>") for k in wanted}, wanted)
    if diff:
        shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise ResultError(f"{path} holds a finished run with other settings ({shown}); delete it, or choose "
                          f"another --name / --out / --out-dir")
    return True
