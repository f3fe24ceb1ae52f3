#!/usr/bin/env python
"""Re-execute the book's notebooks in place, refreshing their stored outputs.

    python scripts/execute_notebooks.py                 # every book/**/*.ipynb
    python scripts/execute_notebooks.py book/02_x.ipynb # only these
    python scripts/execute_notebooks.py -v ...          # also print each cell

Each notebook runs top to bottom on the ``python3`` kernel of the current
environment (use the project's venv Python), with its own folder as the working
directory and a per-cell timeout (600 s by default).  On success the notebook is
written back with fresh outputs; ipywidgets state (``metadata.widgets``) and
per-cell timing metadata are dropped, so no widget JavaScript gets embedded and
re-runs give small diffs.  The stored outputs are what ``pytest --nbval``
compares against (with ``book/nbval_sanitize.cfg``).

A failing cell stops that notebook, leaves its file untouched, names the
notebook and the cell (index and first source line) with the error, and makes
the script exit 1 after trying the remaining notebooks.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
SKIP_PARTS = {".ipynb_checkpoints", "_build"}


def find_notebooks(paths: list[str]) -> list[Path]:
    if paths:
        nbs = [Path(p).resolve() for p in paths]
        missing = [str(p) for p in nbs if not p.is_file()]
        if missing:
            sys.exit(f"execute_notebooks: no such notebook: {', '.join(missing)}")
        return nbs
    return sorted(p for p in BOOK.rglob("*.ipynb") if not SKIP_PARTS.intersection(p.parts))


def strip_volatile_metadata(nb: nbformat.NotebookNode) -> None:
    """Drop widget state and execution timing: they change on every run."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                out.get("metadata", {}).pop("application/vnd.jupyter.widget-state+json", None)


def first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line.strip()[:100]
    return "<empty>"


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def execute(path: Path, timeout: int, kernel: str, verbose: bool) -> tuple[bool, str]:
    nb = nbformat.read(path, as_version=4)
    n_code = sum(c.cell_type == "code" for c in nb.cells)
    state = {"index": None, "t0": 0.0}

    def on_start(cell, cell_index):
        state["index"], state["t0"] = cell_index, time.perf_counter()

    def on_done(cell, cell_index, execute_reply):
        if verbose:
            print(f"    cell {cell_index:3d} ({time.perf_counter() - state['t0']:6.1f} s) "
                  f"{first_line(cell.source)}", flush=True)

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel,
        resources={"metadata": {"path": str(path.parent)}},  # cwd = the notebook's folder
        allow_errors=False,
        store_widget_state=False,
        record_timing=False,
        on_cell_start=on_start,
        on_cell_executed=on_done,
    )
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as exc:
        idx = state["index"]
        src = first_line(nb.cells[idx].source) if idx is not None else "?"
        kind = "timed out" if isinstance(exc, CellTimeoutError) else "failed"
        detail = str(exc).strip().splitlines()
        tail = "\n      ".join(detail[-12:])
        return False, f"{rel(path)}: cell {idx} {kind} (`{src}`):\n      {tail}"
    except Exception as exc:  # kernel died, could not start, ...
        return False, f"{rel(path)}: {type(exc).__name__}: {exc}"
    strip_volatile_metadata(nb)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return True, f"{n_code} code cells"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="notebooks to run (default: every book/**/*.ipynb)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    ap.add_argument("--kernel", default="python3", help="kernel name (default python3)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every cell as it finishes")
    args = ap.parse_args(argv)

    notebooks = find_notebooks(args.notebooks)
    if not notebooks:
        print("execute_notebooks: no notebooks found under book/")
        return 0
    failures = []
    t_all = time.perf_counter()
    for i, path in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {rel(path)} ...", flush=True)
        t0 = time.perf_counter()
        ok, msg = execute(path, args.timeout, args.kernel, args.verbose)
        dt = time.perf_counter() - t0
        if ok:
            print(f"[{i}/{len(notebooks)}] {rel(path)}: ok, {msg}, {dt:.1f} s", flush=True)
        else:
            print(f"[{i}/{len(notebooks)}] FAILED after {dt:.1f} s -- {msg}", file=sys.stderr, flush=True)
            failures.append(rel(path))
    total = time.perf_counter() - t_all
    if failures:
        print(f"execute_notebooks: {len(failures)} of {len(notebooks)} notebooks failed "
              f"(left unchanged): {', '.join(failures)}", file=sys.stderr)
        return 1
    print(f"execute_notebooks: all {len(notebooks)} notebooks executed and saved in {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
