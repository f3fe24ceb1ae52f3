"""One atomic writer for every file the library hands a user (JSON results, checkpoints).

The bytes go to a temporary file in the target's folder, are flushed and fsynced,
get the permissions a plain ``open(..., "w")`` would give (``0o666`` minus the
umask; temporary files are created ``0o600``), and then replace the target in one
``os.replace``. On any failure -- a full disk, no permission, Ctrl-C -- the temporary
file is removed and the previous target, if any, is left intact.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable

from .errors import WriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a binary temporary file, then move it to ``path`` in one step.

    Raises
    ------
    WriteError
        The folder cannot be created or the file cannot be written (message names ``path``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}; the previous file, if any, "
                         f"is unchanged") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Fail now, not after hours of training, if a file cannot be created at ``path``.

    Creates a probe file in the target's folder and removes it again, together with
    any folder it had to create: nothing is left behind.
    """
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{what} {path} is a folder; give a file path")
    created = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise WriteError(f"{what} {path} cannot be written: {exc.strerror or exc}") from None
    finally:
        for folder in created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                pass
