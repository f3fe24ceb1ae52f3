"""Count the test functions, ``assert`` statements and ``pytest.raises`` checks under tests/ (by ast).

Usage: ``python scripts/count_assertions.py [FOLDER] [--per-file] [--json]`` (default folder ``tests``).

What is counted, statically, in every ``test_*.py`` and ``conftest.py`` (helpers included, since a helper's
``assert`` runs in every test that calls it):

* tests: functions (and methods) named ``test_*``; a parametrized test counts once (``pytest --collect-only -q``
  gives the number of collected cases);
* asserts: ``assert`` statements;
* raises: calls of ``pytest.raises`` (as a context manager or a call), ``pytest.warns`` not included.

Used to show that a change to the suite (tests merged, moved in-process, shared fixtures) keeps every check.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path


def _is_pytest_raises(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "raises" and isinstance(f.value, ast.Name)
            and f.value.id == "pytest") or (isinstance(f, ast.Name) and f.id == "raises")


def count_file(path: Path) -> dict[str, int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    counts = {"tests": 0, "asserts": 0, "raises": 0}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
            counts["tests"] += 1
        elif isinstance(node, ast.Assert):
            counts["asserts"] += 1
        elif _is_pytest_raises(node):
            counts["raises"] += 1
    return counts


def count(folder: Path) -> dict[str, dict[str, int]]:
    files = sorted(p for p in folder.glob("*.py") if p.name.startswith("test_") or p.name == "conftest.py")
    return {p.name: count_file(p) for p in files}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default="tests")
    p.add_argument("--per-file", action="store_true", help="one line per file")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    a = p.parse_args(argv)
    per_file = count(Path(a.folder))
    total = {k: sum(c[k] for c in per_file.values()) for k in ("tests", "asserts", "raises")}
    if a.json:
        print(json.dumps({"files": per_file, "total": total}, indent=1))
        return 0
    if a.per_file:
        for name, c in per_file.items():
            print(f"{name:28s} tests {c['tests']:4d}  asserts {c['asserts']:5d}  raises {c['raises']:4d}")
    print(f"{'total':28s} tests {total['tests']:4d}  asserts {total['asserts']:5d}  raises {total['raises']:4d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
