"""Move experiment results from the layout before amata_lib 0.3 to one folder per experiment.

Before: ``ROOT/<exp>[-reduced]/<run>.json`` for the config's seed and
``ROOT/<exp>[-reduced]-seed<N>/<run>.json`` for the others. After:
``ROOT/<exp>[-reduced]/seed<N>/<run>.json`` for every seed, ``N`` read from each file.

Usage: ``python scripts/migrate_results.py [ROOT]`` (default ``data/results``); ``--dry-run``
prints the moves only. Files are moved, never rewritten, so every byte (and so every
stored number and verdict) is unchanged; a file whose target exists is an error and
nothing is moved.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

OLD_SEED = re.compile(r"^(?P<exp>.+)-seed(?P<seed>\d+)$")


def planned_moves(root: Path) -> list[tuple[Path, Path]]:
    """Every ``(old, new)`` path of the migration under ``root``; files already in the new layout are left alone."""
    moves = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.json"))
        if not files:
            continue
        match = OLD_SEED.match(folder.name)
        experiment = match["exp"] if match else folder.name
        for f in files:
            seed = json.loads(f.read_text())["seed"]
            if match and int(match["seed"]) != seed:
                raise SystemExit(f"{f} holds seed {seed} but its folder says seed {match['seed']}; nothing moved")
            moves.append((f, root / experiment / f"seed{seed}" / f.name))
    targets = [new for _, new in moves]
    clash = sorted({t for t in targets if targets.count(t) > 1 or t.exists()})
    if clash:
        raise SystemExit(f"{clash[0]} exists already or is the target of two files; nothing moved")
    return moves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="data/results", help="results folder (default: data/results)")
    parser.add_argument("--dry-run", action="store_true", help="print the moves, change nothing")
    a = parser.parse_args(argv)
    root = Path(a.root)
    if not root.is_dir():
        print(f"migrate_results: {root} is not a folder", file=sys.stderr)
        return 2
    moves = planned_moves(root)
    for old, new in moves:
        print(f"{old} -> {new}")
        if not a.dry_run:
            new.parent.mkdir(parents=True, exist_ok=True)
            old.rename(new)
    if not a.dry_run:
        for old, _ in moves:
            if old.parent.exists() and not any(old.parent.iterdir()):
                old.parent.rmdir()
    print(f"{len(moves)} file(s) {'to move' if a.dry_run else 'moved'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
