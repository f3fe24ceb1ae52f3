"""Inner maximizers by name, for the command line and experiment configs."""
from __future__ import annotations

import inspect

from ._checks import check_choice
from .errors import UserError
from .maximizers import Clean, FATMaximizer, FOSCMaximizer, Maximizer, PGDMaximizer
from .plus import ATTAMaximizer, FastMaximizer, FreeMaximizer, NFGSMMaximizer, YOPOMaximizer

MAXIMIZERS: dict[str, type[Maximizer]] = {
    "clean": Clean, "pgd": PGDMaximizer, "fosc": FOSCMaximizer, "fat": FATMaximizer,
    "free": FreeMaximizer, "fast": FastMaximizer, "yopo": YOPOMaximizer, "atta": ATTAMaximizer,
    "n-fgsm": NFGSMMaximizer}


def build_maximizer(name: str, eps: float, **kwargs) -> Maximizer:
    """Construct the maximizer registered as ``name`` in :data:`MAXIMIZERS` with radius ``eps``.

    ``kwargs`` go to its constructor (e.g. ``c_max`` for ``"fosc"``, ``budget`` for
    ``"fat"``, ``n`` and ``layer`` for ``"yopo"``, ``reset`` for ``"atta"``); ``"clean"``
    takes none and ignores ``eps``.

    Raises
    ------
    UserError
        Unknown ``name``, a keyword the maximizer does not take, or a bad value.
    """
    cls = MAXIMIZERS[check_choice("name", name, sorted(MAXIMIZERS))]
    params = [p for p in inspect.signature(cls).parameters if p != "eps"]
    unknown = [key for key in kwargs if key not in params]
    if unknown:
        raise UserError(f"maximizer {name!r} has no parameter {unknown[0]!r}; allowed: {params}")
    return cls() if cls is Clean else cls(eps, **kwargs)
