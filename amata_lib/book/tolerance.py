"""Checks of a chapter's live numbers against the book's stored run, printed the same on every machine.

A number that comes out of live training or an attack moves when the arithmetic
changes: PyTorch picks other kernels on another CPU (``ATEN_CPU_CAPABILITY``,
oneDNN's and the BLAS's own dispatch) or on a GPU, and a difference in the last bit
of one minibatch's gradient grows, over epochs of training and through the sign of
every PGD step, into points of accuracy. Such a number is one draw. A chapter
therefore prints it as the stored run's value with a tolerance measured across
kernel sets (``scripts/measure_tolerances.py``, ``data/benchmarks/tolerances.json``)
and checks the live value against it::

    stored = StoredRun("stored_values.json", "02_amata")     # the chapter's stored run, read back
    check_close("PGD-2, PGD-20 accuracy after 30 epochs (200 test images)", 100 * acc,
                stored["PGD-2, PGD-20 accuracy after 30 epochs (200 test images)"], tol=4, unit="%",
                tol_unit="points")

prints, on every machine where the live value lies within the tolerance,

    PGD-2, PGD-20 accuracy after 30 epochs (200 test images): 53 % ± 4 points (stored run: 53.0 %), within tolerance

and raises :class:`AssertionError` (the cell fails, and so does ``pytest --nbval``)
where it does not. The printed line never contains the live value, so strict nbval
compares it exactly; the live value is in the chapter's figures.

The stored values are those of the run whose outputs the chapter stores (the book's machine,
native kernels), kept by label in ``book/stored_values.json`` and written there by
``python scripts/measure_tolerances.py --store``, which executes the chapters and copies
every check's live value. When the environment variable ``AMATA_TOLERANCE_RECORD`` names a
file, every check appends its live value there as one JSON line instead of failing (and a
label with no stored value yet reads as NaN): this is how that script collects the values
of every check under several kernel sets.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

RECORD = "AMATA_TOLERANCE_RECORD"
"""The environment variable naming a file to which every check appends ``{"label", "value", "stored", ...}``."""


class StoredRun:
    """The stored run's checked values of one chapter, by label, read from a JSON file.

    ``StoredRun(path, chapter)[label]`` is the value; ``.table(title, rows, columns)`` the
    stored table of :func:`check_table` (entries labelled ``"title | row | column"``). A label
    with no stored value raises :class:`KeyError` naming the command that stores it (outside
    recording, see :data:`RECORD`).
    """

    def __init__(self, path: str | os.PathLike, chapter: str):
        self.path, self.chapter = Path(path), chapter
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.values: dict[str, float] = data.get("chapters", {}).get(chapter, {})

    def __getitem__(self, label: str) -> float:
        if label in self.values:
            return float(self.values[label])
        if os.environ.get(RECORD):
            return math.nan
        raise KeyError(f"{self.path} has no stored value for {label!r} of chapter {self.chapter!r}; "
                       f"store the chapter's run with 'python scripts/measure_tolerances.py --store "
                       f"book/{self.chapter}.ipynb'")

    def table(self, title: str, rows: list[str], columns: list[str]) -> dict[str, list[float]]:
        return {row: [self[f"{title} | {row} | {col}"] for col in columns] for row in rows}


def _decimals(x: float) -> int:
    """Decimals needed to write ``x`` as given (0.5 -> 1, 3 -> 0, 0.02 -> 2), at most 6."""
    for d in range(7):
        if math.isclose(round(x, d), x, rel_tol=0, abs_tol=1e-12):
            return d
    return 6


def _number(x: float, decimals: int, unit: str) -> str:
    return f"{x:.{decimals}f}" + (f" {unit}" if unit else "")


def tolerance_text(stored: float, *, tol: float | None = None, rel: float | None = None, unit: str = "",
                   tol_unit: str | None = None, digits: int | None = None) -> str:
    """``53 % ± 4 points (stored run: 53.0 %)``: the stored value at the tolerance's precision, the
    tolerance, and the stored value in full (``digits`` decimals; default: two more than the tolerance's)."""
    if (tol is None) == (rel is None):
        raise ValueError("give exactly one of tol (absolute) and rel (relative)")
    if rel is not None:
        if not rel > 0:
            raise ValueError(f"rel must be > 0, got {rel!r}")
        width = abs(stored) * rel
        held = max(0, -math.floor(math.log10(width))) if width > 0 and math.isfinite(width) else 3
        full = held + 2 if digits is None else digits
        pct = f"{100 * rel:.{_decimals(100 * rel)}f}"
        return f"{_number(stored, held, unit)} ± {pct} % (stored run: {_number(stored, full, unit)})"
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    held = _decimals(tol)
    full = held + 1 if digits is None else digits
    tail = tol_unit if tol_unit is not None else unit
    return (f"{_number(stored, held, unit)} ± {tol:.{held}f}{' ' + tail if tail else ''} "
            f"(stored run: {_number(stored, full, unit)})")


def check_close(label: str, value: float, stored: float, *, tol: float | None = None, rel: float | None = None,
                unit: str = "", tol_unit: str | None = None, digits: int | None = None) -> None:
    """Print ``label: <stored> ± <tolerance> (stored run: ...), within tolerance``; fail outside it.

    Parameters
    ----------
    label : str
        What the number is, with the conditions it was measured under (attack, images, epochs).
    value : float
        This run's value, in the units the line prints (e.g. percent, not a fraction).
    stored : float
        The value of the run whose outputs the chapter stores (the book's machine, native kernels).
    tol, rel : float
        The tolerance: absolute (``|value - stored| <= tol``) or relative
        (``|value - stored| <= rel * |stored|``); exactly one. Set from measurements
        across kernel sets, not guessed (``data/benchmarks/tolerances.json``).
    unit, tol_unit : str
        Unit of the value (``"%"``) and of an absolute tolerance (``"points"``; default ``unit``).
    digits : int, optional
        Decimals of the stored value in brackets.

    Raises
    ------
    AssertionError
        The live value lies outside the tolerance (never while ``AMATA_TOLERANCE_RECORD`` is set).
    """
    value, stored = float(value), float(stored)
    text = tolerance_text(stored, tol=tol, rel=rel, unit=unit, tol_unit=tol_unit, digits=digits)
    bound = tol if tol is not None else rel * abs(stored)
    within = math.isfinite(value) and abs(value - stored) <= bound * (1 + 1e-9)
    path = os.environ.get(RECORD)
    if path:
        with Path(path).open("a") as f:
            f.write(json.dumps({"label": label, "value": value, "stored": stored, "tol": tol, "rel": rel,
                                "unit": unit, "within": within}) + "\n")
    elif not within:
        raise AssertionError(
            f"{label}: this run gives {value:.6g}{' ' + unit if unit else ''}, outside the stored run's {text}. "
            f"The tolerance was measured across kernel sets on the book's machine "
            f"(data/benchmarks/tolerances.json); re-execute the chapter on this machine (make notebooks) "
            f"to store its own outputs, or report the difference.")
    print(f"{label}: {text}, {'within tolerance' if within else 'OUTSIDE the tolerance (recorded, not raised)'}")


def check_table(title: str, columns: list[str], live: dict[str, list[float]], stored: dict[str, list[float]], *,
                tol: float | list[float] | None = None, rel: float | list[float] | None = None, fmt: str = ".2f",
                unit: str = "", width: int = 8, label_width: int = 8) -> None:
    """Print the stored run's table ``stored[row][column]`` and check every live entry against it.

    An entry passes when ``|live - stored| <= tol + rel * |stored|`` (give either or both; each a
    number for the whole table or a list with one per column). The printed lines (the title
    with the tolerance, the header, the stored rows, and a closing line) are the same on every
    machine; the live values are in the chapter's figure. Raises :class:`AssertionError`
    naming every entry outside the tolerance (recorded instead while ``AMATA_TOLERANCE_RECORD``
    is set, one JSON line per entry).
    """
    if tol is None and rel is None:
        raise ValueError("give tol (absolute), rel (relative) or both")
    if set(live) != set(stored) or any(len(live[r]) != len(columns) or len(stored[r]) != len(columns) for r in stored):
        raise ValueError(f"{title}: live and stored tables need the same rows and {len(columns)} columns each")
    per_column = isinstance(tol, (list, tuple)) or isinstance(rel, (list, tuple))
    tols = list(tol) if isinstance(tol, (list, tuple)) else [tol] * len(columns)
    rels = list(rel) if isinstance(rel, (list, tuple)) else [rel] * len(columns)
    if len(tols) != len(columns) or len(rels) != len(columns):
        raise ValueError(f"{title}: give one tolerance per column ({len(columns)})")
    if any(t is None and r is None for t, r in zip(tols, rels)):
        raise ValueError(f"{title}: every column needs a tolerance (tol, rel or both)")

    def text(t: float | None, r: float | None) -> str:
        parts = ([f"{t:.{_decimals(t)}f}{' ' + unit if unit else ''}"] if t is not None else []) + \
                ([f"{100 * r:g} %"] if r is not None else [])
        return "± " + (parts[0] if len(parts) == 1 else f"({parts[0]} + {parts[1]} of the entry)")

    bound_text = ("tolerance by column: " + ", ".join(f"{c} {text(t, r)}" for c, t, r in zip(columns, tols, rels))
                  if per_column else f"every entry {text(tols[0], rels[0])}")
    outside, records = [], []
    for row in stored:
        for col, value, ref, t, r in zip(columns, live[row], stored[row], tols, rels):
            value, ref = float(value), float(ref)
            bound = (t or 0.0) + (r or 0.0) * abs(ref)
            within = math.isfinite(value) and abs(value - ref) <= bound * (1 + 1e-9)
            records.append({"label": f"{title} | {row} | {col}", "value": value, "stored": ref, "tol": t,
                            "rel": r, "unit": unit, "within": within})
            if not within:
                outside.append(f"{row} / {col}: {value:.4g} (stored {ref:{fmt}})")
    path = os.environ.get(RECORD)
    if path:
        with Path(path).open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    elif outside:
        raise AssertionError(f"{title}: {len(outside)} of {len(records)} entries outside the stored run's "
                             f"{bound_text}: {'; '.join(outside)}. Re-execute the chapter on this machine "
                             f"(make notebooks) to store its own outputs, or report the difference.")
    print(f"{title} (stored run; {bound_text}):")
    print(f"{'':{label_width}s}" + "".join(f"{c:>{width}s}" for c in columns))
    for row, values in stored.items():
        print(f"{row:{label_width}s}" + "".join(f"{v:>{width}{fmt}}" for v in values))
    if outside:
        print(f"this run: {len(records) - len(outside)} of {len(records)} entries within tolerance "
              f"(the others recorded, not raised)")
    else:
        print(f"this run: all {len(records)} entries within tolerance")
