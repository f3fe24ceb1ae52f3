"""Argument checks shared by the library: each raises ValueError naming the parameter and the value."""
from __future__ import annotations

import math
from numbers import Real


def check_real(name: str, value: object, *, minimum: float | None = None, strict: bool = False) -> float:
    """A finite real number (not a bool), ``>= minimum`` (``> minimum`` if ``strict``)."""
    ok = not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """A whole number ``>= minimum`` (ints, integral floats and numpy integers; not bools)."""
    ok = (not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
          and float(value).is_integer() and value >= minimum)
    if not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_epoch(t: object, epochs: object) -> None:
    """``epochs`` an integer >= 1 and ``t`` an integer epoch in ``[0, epochs)``."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < epochs:
        raise ValueError(f"t must be an integer in [0, epochs), got {t!r}")
