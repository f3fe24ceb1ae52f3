"""One atomic writer for every file the library hands a user (JSON results, checkpoints), and one JSON reader.

The bytes go to a temporary file in the target's folder, are flushed and fsynced,
get the permissions a plain ``open(..., "w")`` would give (``0o666`` minus the
umask; temporary files are created ``0o600``), and then replace the target in one
``os.replace``. On any failure -- a full disk, no permission, Ctrl-C -- the temporary
file is removed and the previous target, if any, is left intact.

:func:`read_json` reads every JSON file a user hands the library (results, configs, studies):
a regular file of at most ``MAX_JSON_BYTES``, nested at most ``MAX_JSON_DEPTH`` levels,
or one error naming it -- never a hang on ``/dev/zero`` or a ``RecursionError``.
"""
from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from .errors import UserError, WriteError

MAX_JSON_BYTES = 64 * 2 ** 20
MAX_JSON_DEPTH = 100


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None],
                 before_replace: Callable[[], None] | None = None) -> Path:
    """Call ``write(f)`` on a binary temporary file, then move it to ``path`` in one step.

    ``before_replace()``, if given, is called after the bytes are on disk and just before
    the replace; whatever it raises stops the write (the temporary file is removed, the
    target is left as it is) and is raised.

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
        if before_replace is not None:
            before_replace()
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
    the folders this call created: nothing is left behind. A folder is removed only
    when this call's own ``mkdir`` made it, so a folder another process (another rank
    of a ``torchrun`` job) created meanwhile is never taken from under it.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise WriteError(f"{what} {path} is a folder; give a file path")
        missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    except OSError as exc:  # a name too long, a folder that cannot be searched
        raise WriteError(f"{what} {path} cannot be written: {exc.strerror or exc}") from None
    created = []
    try:
        for folder in reversed(missing):  # shallowest first
            try:
                folder.mkdir()
                created.append(folder)
            except FileExistsError:  # made by someone else since: theirs, not ours to remove
                pass
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise WriteError(f"{what} {path} cannot be written: {exc.strerror or exc}") from None
    finally:
        for folder in reversed(created):  # deepest first
            try:
                folder.rmdir()
            except OSError:
                pass


def _depth(value: Any, limit: int) -> int:
    """How deeply lists and objects nest in ``value`` (counted without recursion; stops past ``limit``)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_json(path: str | os.PathLike, error: type[UserError] = UserError,
              missing: Callable[[], str] | None = None) -> Any:
    """The JSON value in file ``path``; anything else is ``error`` with one line naming ``path``.

    Refused: a missing file (``missing()`` may add a hint), something that is not a regular
    file (a folder, ``/dev/zero``, a pipe), a file over ``MAX_JSON_BYTES``, bytes that are
    not UTF-8 JSON, and values nested deeper than ``MAX_JSON_DEPTH`` levels (which would
    exhaust the interpreter's recursion). JSON's non-standard ``NaN`` and ``Infinity`` are
    read as floats: what a number may be is for the caller to check.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such file{missing() if missing else ''}") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: not a regular file; give a JSON file")
    if info.st_size > MAX_JSON_BYTES:
        raise error(f"{path}: too large for a JSON file here ({info.st_size:,} bytes, at most {MAX_JSON_BYTES:,})")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_JSON_BYTES:
        raise error(f"{path}: too large for a JSON file here (more than {MAX_JSON_BYTES:,} bytes)")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise error(f"{path}: not valid JSON here: nested deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise error(f"{path}: not valid JSON here: nested deeper than {MAX_JSON_DEPTH} levels")
    return value
