"""Argument checks shared by the library: each raises :class:`~amata_lib.infra.errors.UserError` naming the
parameter."""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Iterable, TypeVar

import torch

from .errors import UserError

T = TypeVar("T")


def check_real(name: str, value: object, *, minimum: float | None = None, strict: bool = False,
               maximum: float | None = None) -> float:
    """A finite real number (not a bool), ``>= minimum`` (``> minimum`` if ``strict``), ``<= maximum``."""
    ok = not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        low = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        high = "" if maximum is None else f"{' and' if low else ''} <= {maximum:g}"
        raise UserError(f"{name} must be a finite number{low}{high}, got {value!r}")
    return float(value)


def check_positive(name: str, value: object) -> float:
    """A finite number ``> 0``."""
    return check_real(name, value, minimum=0, strict=True)


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """A whole number ``>= minimum`` (ints, integral floats and numpy integers; not bools)."""
    ok = (not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
          and float(value).is_integer() and value >= minimum)
    if not ok:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_strict_int(name: str, value: object, minimum: int = 1) -> int:
    """An ``int`` (no float, no bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_bool(name: str, value: object) -> bool:
    """``True`` or ``False`` only (no 0/1, no strings)."""
    if not isinstance(value, bool):
        raise UserError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value: T, allowed: Iterable[T]) -> T:
    """One of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise UserError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_epoch(t: object, epochs: object) -> None:
    """``epochs`` an integer >= 1 and ``t`` an integer epoch in ``[0, epochs)``."""
    check_strict_int("epochs", epochs)
    if isinstance(t, bool) or not isinstance(t, Integral) or not 0 <= t < epochs:
        raise UserError(f"t must be an integer in [0, epochs), got {t!r}")


def check_pixels(name: str, x: torch.Tensor) -> None:
    """A floating tensor whose values all lie in ``[0, 1]`` (pixel units; NaN is refused)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise UserError(f"{name} must be a floating-point tensor of pixels in [0, 1], "
                        f"got {type(x).__name__}{'' if not isinstance(x, torch.Tensor) else ' of ' + str(x.dtype)}")
    if x.numel() == 0:
        return
    low, high = torch.stack(torch.aminmax(x.detach())).tolist()  # one reduction, one sync; NaN propagates
    if math.isnan(low) or math.isnan(high):
        raise UserError(f"{name} holds NaN values; pixels must be numbers in [0, 1]")
    if low < 0 or high > 1:
        raise UserError(f"{name} must hold pixels in [0, 1] (normalise inside the model), got values in "
                        f"[{low:.4g}, {high:.4g}]")


def check_labels(name: str, y: torch.Tensor, n: int, num_classes: int | None = None) -> None:
    """A 1-D integer tensor of ``n`` class indices in ``[0, num_classes)``."""
    if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        kind = y.dtype if isinstance(y, torch.Tensor) else type(y).__name__
        raise UserError(f"{name} must be integer class indices, got {kind}")
    if y.ndim != 1:
        raise UserError(f"{name} must be a 1-D tensor of class indices (not one-hot), got shape {tuple(y.shape)}")
    if len(y) != n:
        raise UserError(f"{name} has {len(y)} labels for {n} images; they must be equally many")
    if len(y) == 0:
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 or (num_classes is not None and high >= num_classes):
        bound = ">= 0" if num_classes is None else f"in [0, {num_classes}) (the model has {num_classes} outputs)"
        raise UserError(f"{name} must be class indices {bound}, got values in [{low}, {high}]")
