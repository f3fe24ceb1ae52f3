"""Checkpoints a user can trust: loaded without running code, resumed only by the run that wrote them.

A checkpoint is a ``torch.save`` file of plain data -- tensors, numbers, strings,
lists and dicts -- with the schema tag ``SCHEMA`` and the *settings* of the run
that wrote it (everything that decides its result: schedule, maximizer, optimiser,
data, initial weights, evaluation; see :func:`amata_lib.core.training.run_settings`).

* :func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``: a file that
  would need to run code (a crafted pickle) is refused, never executed; a damaged,
  empty or foreign file is refused with one line that names it and says what to do.
* A checkpoint resumes only a run with the same settings; otherwise the error lists
  what differs (:func:`differences`).
* :class:`RunLock` keeps a second process off a run that is being trained (and, waiting,
  serialises the writers of one result file: :func:`~amata_lib.infra.results.save_run`).
* :func:`save_checkpoint` writes atomically (:func:`amata_lib.infra.io.atomic_write`).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .errors import CheckpointError, RunLocked, WriteError
from .io import atomic_write

try:  # POSIX advisory locks; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

SCHEMA = "amata-checkpoint/1"
WHAT_TO_DO = "delete it to start afresh, or point --checkpoint elsewhere"


def canonical(settings: Any) -> str:
    """Settings as canonical JSON (sorted keys): equal settings give equal text."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=repr)


def digest(settings: Any, length: int = 12) -> str:
    """Short SHA-256 of :func:`canonical` settings (for default run names)."""
    return hashlib.sha256(canonical(settings).encode()).hexdigest()[:length]


def differences(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    """``"key: stored -> wanted"`` for every leaf that differs between two settings dicts."""
    out = []
    for key in sorted(set(stored) | set(wanted), key=str):
        a, b = stored.get(key, "<absent>"), wanted.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif canonical(a) != canonical(b):
            out.append(f"{prefix}{key}: {canonical(a)[:60]} -> {canonical(b)[:60]}")
    return out


def save_checkpoint(path: str | os.PathLike, state: dict, settings: dict) -> None:
    """Write ``state`` with the run's ``settings`` and the schema tag, atomically."""
    atomic_write(path, lambda f: torch.save({"schema": SCHEMA, "settings": settings, **state}, f))


def intact(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a whole ``torch.save`` zip file: every member's CRC right, its pickle complete.

    Nothing is unpickled: the pickle's opcodes are only walked (``pickletools.genops``),
    so a file that loading refuses can be told apart as damaged (cut short, corrupted) or
    whole (then it holds objects other than plain data).
    """
    try:
        with zipfile.ZipFile(path) as z:
            if z.testzip() is not None:
                return False
            pickles = [n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pickles) != 1:
                return False
            data = z.read(pickles[0])
        *_, (opcode, _, end) = pickletools.genops(data)
        return opcode.name == "STOP" and end + 1 == len(data)
    except (OSError, EOFError, ValueError, KeyError, IndexError, struct.error, zipfile.BadZipFile,
            zipfile.LargeZipFile, NotImplementedError, RuntimeError):
        return False


def load_checkpoint(path: str | os.PathLike, settings: dict) -> dict:
    """The state saved at ``path`` if it is a checkpoint of the run described by ``settings``.

    Raises
    ------
    CheckpointError
        The file would run code, is damaged or empty, is not an ``amata_lib`` checkpoint,
        or was written by a run with other settings (the message lists them).
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # sorted below: a damaged file, one that would run code, or a bug
        damaged = f"checkpoint {path} is damaged or not a checkpoint (cut short or corrupted: " \
                  f"{type(exc).__name__}); {WHAT_TO_DO}"
        if not intact(path):  # whatever torch made of the bytes, they are not a whole checkpoint
            raise CheckpointError(damaged) from None
        if isinstance(exc, pickle.UnpicklingError):
            first = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line),
                         str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)[:200]
            raise CheckpointError(f"checkpoint {path} is refused: it holds objects other than tensors and plain "
                                  f"data, which loading would execute ({first}); {WHAT_TO_DO}") from None
        if isinstance(exc, (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError,
                            AttributeError)):
            raise CheckpointError(damaged) from None
        raise
    if not isinstance(state, dict) or state.get("schema") != SCHEMA:
        raise CheckpointError(f"checkpoint {path} is not an amata_lib checkpoint (no schema {SCHEMA!r}); "
                              f"{WHAT_TO_DO}")
    diff = differences(state.get("settings", {}), settings)
    if diff:
        shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise CheckpointError(f"checkpoint {path} belongs to a run with other settings ({shown}); resume with "
                              f"the same settings, or {WHAT_TO_DO}")
    return state


class RunLock:
    """Exclusive lock on a run, held while it trains: ``with RunLock(checkpoint_path): ...``.

    The lock is ``PATH.lock`` beside the checkpoint, taken with ``flock`` (released
    by the kernel if the process dies, so ``kill -9`` never leaves a run locked) and
    removed on a normal exit. A second process gets :class:`~amata_lib.infra.errors.RunLocked`;
    with ``wait=True`` it waits for the lock instead (for locks held only for a moment,
    such as the write of a result file). A lock file that cannot be created (a read-only
    folder) is a :class:`~amata_lib.infra.errors.WriteError`.
    """

    def __init__(self, path: str | os.PathLike, wait: bool = False) -> None:
        self.path = Path(f"{path}.lock")
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        if fcntl is None:  # pragma: no cover
            return self
        while True:
            for attempt in range(5):
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                    break
                except FileNotFoundError as exc:  # the folder went between mkdir and open: make it again
                    if attempt == 4:
                        raise WriteError(f"cannot create the lock file {self.path}: {exc.strerror}") from None
                except OSError as exc:
                    raise WriteError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLocked(f"another process is training this run (lock {self.path} is held); wait for it "
                                f"to finish, or choose another --name") from None
            try:  # the holder before us may have removed the file between our open and our lock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return self
            os.close(fd)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def _tensors_to(state: Any, device: torch.device) -> Any:
    """``state`` (nested dicts) with every tensor moved to ``device``."""
    if isinstance(state, dict):
        return {k: _tensors_to(v, device) for k, v in state.items()}
    return state.to(device) if isinstance(state, torch.Tensor) else state


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """This process's CPU generator state and that of its CUDA device."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def capture(run: Any, history: list[dict]) -> dict | None:
    """Everything a resumed run needs, gathered from every rank; ``None`` on ranks other than 0.

    ``run`` is the trainer's :class:`~amata_lib.core.training.Run` (model, optimiser, lr
    schedule, shuffling generator, maximizer, device). Under ``torchrun`` each rank's
    random state and maximizer state (e.g. Free's perturbation of its shard) are kept.
    """

    world = distributed.world_size()
    rank_rng = distributed.all_gather(_rng_state(run.device)) if world > 1 else None
    max_state = _tensors_to(run.maximizer.state_dict(), torch.device("cpu"))
    if world > 1:
        max_state = distributed.all_gather(max_state)
    if not distributed.is_main():
        return None
    return {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "lr_schedule": run.lr_schedule.state_dict(), "shuffle_rng": run.shuffle_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if run.device.type == "cuda" and world == 1 else None,
            "world_size": world, "rank_rng": rank_rng, "history": history, "maximizer": max_state}


def restore(run: Any, state: dict) -> list[dict]:
    """Put a state from :func:`capture` back into ``run``; returns the history so far."""

    world, rank = distributed.world_size(), distributed.rank()
    if state["world_size"] != world:
        raise CheckpointError(f"checkpoint was written by world_size={state['world_size']} processes; resume "
                              f"with the same number, got world_size={world}")
    if world == 1:
        torch.set_rng_state(state["torch_rng"])
        if run.device.type == "cuda" and state["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    else:
        cpu, cuda = state["rank_rng"][rank]
        torch.set_rng_state(cpu)
        if run.device.type == "cuda" and cuda is not None:
            torch.cuda.set_rng_state(cuda, run.device)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.lr_schedule.load_state_dict(state["lr_schedule"])
    run.shuffle_gen.set_state(state["shuffle_rng"])
    saved = state["maximizer"]
    run.maximizer.load_state_dict(_tensors_to(saved[rank] if world > 1 else saved, run.device))
    return state["history"]
