"""Runs saved as JSON with provenance, written atomically and validated on load.

Schema ``amata-run/1``::

    {"schema": "amata-run/1",
     "provenance": {"library_version", "git_commit", "torch_version", "python", "platform",
                    "device", "created", "command", ...},
     "seed": int, "dataset": str, "config": {...}, "history": [ {...}, ... ], "report": {...}}

Validated on load and before every write (:func:`validate`): the schema, and that the
record is sane -- accuracies in [0, 1], passes and time finite, non-negative and never
decreasing over the history, the report's fields of their types. A result is written only
by the run whose settings it holds (:func:`save_run` re-checks them under a lock on the
result's path, just before the atomic replace), and a caller that knows the data a result
must have been trained on checks its hash (:func:`check_data`).
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

from .checkpoints import RunLock, differences
from .errors import UserError
from .io import atomic_write, read_json
from .version import VERSION

SCHEMA = "amata-run/1"
REQUIRED = {"schema": str, "provenance": dict, "seed": int, "dataset": str, "config": dict, "history": list}
PROVENANCE_KEYS = ("library_version", "git_commit", "torch_version", "device", "created")
HISTORY_FIELDS = {"epoch": int, "steps": int, "time": Real, "passes": Real, "layer_passes": Real,
                  "train_loss": Real, "clean_acc": Real, "robust_acc": Real, "fgsm_acc": Real}
HISTORY_ACCURACIES = ("clean_acc", "robust_acc", "fgsm_acc", "early_stop_acc")
CUMULATIVE = ("time", "passes", "layer_passes")  # totals so far: never negative, never decreasing
NON_NEGATIVE = ("steps", "epoch_time", "probe_passes", "probe_time", "alpha", "lr")
REPORT_ACCURACIES = ("clean", "pgd", "cw", "autoattack")
UNKNOWN = object()  # "the data hash is not known here"


class ResultError(UserError):
    """A results file is unreadable, corrupt, insane or not an amata-run file."""


class ResultClash(ResultError):
    """A result file holds a finished run with other settings than the run that would write or skip it."""


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
             device: str | torch.device = "cpu", command: str | None = None, report: dict | None = None,
             ignore: Iterable[str] = ()) -> Path:
    """Save one run (config, history, provenance, optional final ``report``) as ``amata-run/1`` JSON, atomically.

    The record is validated (:func:`validate`) as it will be read back. Under a lock on
    ``path`` (``PATH.lock``, waited for) and just before the atomic replace, a file already
    at ``path`` must hold a run of the same settings (:func:`finished_result`, ``ignore`` as
    there): a result another run finished meanwhile is never overwritten.

    Raises
    ------
    ResultClash
        ``path`` holds a finished run with other settings; nothing is written.
    """
    record = {"schema": SCHEMA, "provenance": provenance(device, command), "seed": seed,
              "dataset": dataset, "config": config, "history": history}
    if report is not None:
        record["report"] = report
    record = _clean(record)
    validate(record)
    text = json.dumps(record, indent=1, allow_nan=False) + "\n"
    with RunLock(path, wait=True):
        return atomic_write(path, lambda f: f.write(text.encode()),
                            before_replace=lambda: finished_result(path, config, ignore=ignore))


def validate(record: Any, source: str = "record") -> dict:
    """Check the ``amata-run/1`` schema and that the record is sane; raise :class:`ResultError` naming what is wrong.

    Sane (:func:`check_sane`): every accuracy in [0, 1] or null, passes and time finite,
    non-negative and never decreasing, epochs increasing, the report's fields of their types.
    """
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
    check_sane(record, source)
    return record


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _accuracy(source: str, where: str, value: Any) -> None:
    """``value`` is null or an accuracy: a number in [0, 1]."""
    if value is not None and not (_number(value) and 0 <= value <= 1):
        raise ResultError(f"{source}: {where} must be an accuracy in [0, 1] or null, got {value!r:.40}")


def _amount(source: str, where: str, value: Any, kind: type = Real, optional: bool = True) -> None:
    """``value`` is a finite number (an ``int`` if ``kind`` is int) >= 0 (or null when ``optional``)."""
    if value is None and optional:
        return
    ok = _number(value) and isinstance(value, kind) and math.isfinite(value) and value >= 0
    if not ok:
        what = "an integer" if kind is int else "a finite number"
        raise ResultError(f"{source}: {where} must be {what} >= 0, got {value!r:.40}")


def _strings(source: str, where: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ResultError(f"{source}: {where} must be a list of strings, got {value!r:.60}")


def check_sane(record: dict, source: str = "record") -> None:
    """Refuse a record whose numbers cannot be true (a hand edit, a foreign writer): :class:`ResultError`.

    History: ``clean_acc``, ``robust_acc``, ``fgsm_acc``, ``early_stop_acc`` in [0, 1] or null;
    ``time``, ``passes`` (and ``layer_passes``) finite, >= 0 and never decreasing (they are
    totals so far); ``epoch`` >= 1 and increasing; per-epoch amounts >= 0. Report: ``clean``,
    ``pgd``, ``cw``, ``autoattack`` accuracies or null; ``n`` an integer; the masking flag a
    bool, the reasons and AutoAttack's flags lists of strings; the warm-up's epochs, time
    and passes and the gradient checks' numbers of their kinds. Seed and data hash of their types.
    """
    if record["seed"] < 0:
        raise ResultError(f"{source}: seed must be >= 0, got {record['seed']}")
    data = record["config"].get("data_sha256")
    if data is not None and not isinstance(data, str):
        raise ResultError(f"{source}: config.data_sha256 must be a string or null, got {data!r:.40}")
    last: dict = {}
    for i, rec in enumerate(record["history"]):
        at = f"history[{i}]"
        if rec["epoch"] < 1 or ("epoch" in last and rec["epoch"] <= last["epoch"]):
            raise ResultError(f"{source}: {at}.epoch must be >= 1 and greater than the epoch before, "
                              f"got {rec['epoch']}")
        for key in HISTORY_ACCURACIES:
            _accuracy(source, f"{at}.{key}", rec.get(key))
        for key in (*CUMULATIVE, *NON_NEGATIVE):
            _amount(source, f"{at}.{key}", rec.get(key), optional=key not in ("time", "passes"))
        for key in CUMULATIVE:
            if rec.get(key) is not None and last.get(key) is not None and rec[key] < last[key]:
                raise ResultError(f"{source}: {at}.{key} {rec[key]!r} is below history[{i - 1}].{key} "
                                  f"{last[key]!r}; {key} is a total so far and cannot decrease")
        train_loss = rec.get("train_loss")
        if train_loss is not None and not math.isfinite(train_loss):
            raise ResultError(f"{source}: {at}.train_loss must be a finite number or null, got {train_loss!r}")
        last = rec
    if "report" not in record:
        return
    report = record["report"]
    if not isinstance(report, dict):
        raise ResultError(f"{source}: report must be an object, got {report!r:.40}")
    for key in REPORT_ACCURACIES:
        _accuracy(source, f"report.{key}", report.get(key))
    if "n" in report:
        _amount(source, "report.n", report["n"], int, optional=False)
    if "gradient_masking_suspect" in report and not isinstance(report["gradient_masking_suspect"], bool):
        raise ResultError(f"{source}: report.gradient_masking_suspect must be true or false, got "
                          f"{report['gradient_masking_suspect']!r:.40}")
    for key in ("masking_reasons", "autoattack_flags"):
        if key in report:
            _strings(source, f"report.{key}", report[key])
    attacks = report.get("autoattack_attacks", "standard")
    if attacks != "standard":
        _strings(source, "report.autoattack_attacks", attacks)
    parts = {"warmup": {"epochs": int, "time": Real, "passes": Real},
             "gradient_free": {"n": int, "queries": int, "acc": None, "pgd_acc": None, "cw_acc": None},
             "input_gradients": {"n": int, "nonfinite": int, "zero_fraction": None}}
    for part, fields in parts.items():
        if part not in report:
            continue
        if not isinstance(report[part], dict):
            raise ResultError(f"{source}: report.{part} must be an object, got {report[part]!r:.40}")
        for key, kind in fields.items():
            where, value = f"report.{part}.{key}", report[part].get(key)
            if kind is None:
                _accuracy(source, where, value)
            else:
                _amount(source, where, value, kind)


def check_data(record: dict, expected: str | None, source: str = "record") -> None:
    """Refuse a result trained on other data than ``expected`` (the SHA-256 of the data file, ``None``: no file)."""
    held = record["config"].get("data_sha256")
    if held != expected:
        shown = [f"{h[:16]}..." if isinstance(h, str) else "none (no data file)" for h in (held, expected)]
        raise ResultError(f"{source} was trained on other data (data_sha256 {shown[0]}, expected {shown[1]}); "
                          f"it is not this experiment's result: move it away or delete it")


def _moved_hint(path: Path) -> str:
    """Where a result named by its place before amata_lib 0.3 lives now (``""`` if nowhere)."""
    folder = path.parent.name
    experiment, sep, seed = folder.rpartition("-seed")
    candidates = [path.parent.parent / experiment / f"seed{seed}" / path.name] if sep and seed.isdigit() else []
    candidates += sorted(path.parent.glob(f"seed*/{path.name}"))
    found = [c for c in candidates if c.is_file()]
    return f"; results moved to one folder per experiment: see {found[0]}" if found else ""


def load_run(path: str | os.PathLike, *, data_sha256: Any = UNKNOWN) -> dict:
    """Load and validate a run saved by :func:`save_run` (sane, see :func:`validate`).

    ``data_sha256``: the hash of the data the run must have been trained on, where the
    caller knows it (``None`` for data without a file, e.g. digits); checked by :func:`check_data`.
    """
    path = Path(path)
    record = read_json(path, ResultError, missing=lambda: _moved_hint(path))
    validate(record, str(path))
    if data_sha256 is not UNKNOWN:
        check_data(record, data_sha256, str(path))
    return record


def finished_result(path: str | os.PathLike, config: dict, *, ignore: Iterable[str] = (),
                    hint: str = "delete it, or choose another --name / --out") -> bool:
    """Whether ``path`` already holds the run described by ``config``; a result of other settings is an error.

    Every key of ``config`` (except ``ignore``) must equal the stored config's, so a
    finished result is never overwritten by, or taken for, a run with other settings.
    ``train`` and ``experiment`` both call this before they train, and :func:`save_run`
    again just before it replaces the file. ``hint`` ends the error's message.

    Raises
    ------
    ResultClash
        ``path`` holds a result made with other settings (the message lists them; other data first).
    ResultError
        ``path`` is no result.
    """
    path = Path(path)
    if not path.exists():
        return False
    stored = load_run(path)["config"]
    wanted = json.loads(json.dumps(_clean({k: v for k, v in config.items() if k not in set(ignore)})))
    diff = differences({k: stored.get(k, "<absent>") for k in wanted}, wanted)
    if diff:
        diff.sort(key=lambda d: not d.startswith("data_sha256"))
        what = "a finished run on other data" if diff[0].startswith("data_sha256") else "a finished run"
        shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise ResultClash(f"{path} holds {what} with other settings ({shown}); {hint}")
    return True
