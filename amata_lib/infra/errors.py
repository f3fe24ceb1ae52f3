"""Exceptions for mistakes a user can fix; anything else is a bug and keeps its traceback.

Every check of an argument, a file or a config raises :class:`UserError` (or a
subclass), with a message that names the parameter or file, the value found and,
where it helps, what to do. It subclasses :class:`ValueError`, so code that catches
``ValueError`` keeps working. The command line prints a :class:`UserError` as one
line and exits with status 2; every other exception is an internal error and is
shown with its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """A bad argument, input file or setting: the message says which and what to do."""


class CheckpointError(UserError):
    """A checkpoint cannot be loaded safely, is damaged, foreign, or belongs to another run."""


class RunLocked(UserError):
    """Another process is training the same run (its lock file is held)."""


class WriteError(UserError):
    """A file could not be written (full disk, no permission); the previous file is intact."""


class AmataWarning(RuntimeWarning):
    """Something a user should know that stops nothing (e.g. bf16 emulated on this CPU); the CLI prints one line."""
