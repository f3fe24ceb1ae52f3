#!/usr/bin/env python
"""Measure how far the chapters' checked live numbers move when PyTorch's kernels change.

    python scripts/measure_tolerances.py                     # every chapter with a check, every kernel set
    python scripts/measure_tolerances.py book/02_amata.ipynb --kernels native default
    python scripts/measure_tolerances.py --store --out data/benchmarks/tolerances.json
    python scripts/measure_tolerances.py --kernels native default generic --machine epyc-avx2 \
        --out data/benchmarks/tolerances.json      # add another CPU's draws to the stored ones

Each chapter is executed top to bottom (nothing is written back) once per kernel set,
with ``AMATA_TOLERANCE_RECORD`` set, so that every ``amata_lib.book.tolerance.check_close``
records its live value instead of failing. A kernel set is a set of environment
variables that make PyTorch and its libraries take other code paths on the same CPU:

* ``native``  -- nothing set: ATen's AVX-512 kernels, oneDNN's and MKL's own choice;
* ``avx2``    -- ``ATEN_CPU_CAPABILITY=avx2`` (what most laptops of the last decade run);
* ``default`` -- ``ATEN_CPU_CAPABILITY=default``: ATen's generic, non-vectorised kernels;
* ``generic`` -- ``default`` plus ``ONEDNN_MAX_CPU_ISA=SSE41`` and ``MKL_CBWR=COMPATIBLE``:
  convolutions and matrix products on their generic paths too.

With ``--store`` the native run's values become the chapters' stored values
(``book/stored_values.json``, by chapter and label: what ``StoredRun`` reads and the
printed lines show); re-execute the chapters natively afterwards (``make notebooks``) so
that their stored outputs show them.

For every check the script reports the stored value, the tolerance the chapter states,
the live value under each kernel set and the largest deviation from the stored value,
and the tolerance the margin rule suggests: ``MARGIN`` times the largest deviation,
rounded up to 1, 1.5, 2, 2.5, 3, 4, ... 9 times a power of ten. The chapters take that,
and at least a floor where the kernels moved a number by less: one point for an
accuracy, one unit of the last printed digit otherwise. A check whose tolerance is below
``MARGIN`` times the measured deviation is marked ``TIGHT`` (exit status 1). The result goes to ``--out`` as JSON with
its provenance (machine, torch, commit, date, the environment of every kernel set).

With ``--machine TAG`` the kernel sets are recorded as ``TAG:native``, ``TAG:default``, ...
and ``--out`` adds them to the draws already stored for each check (from another CPU, say)
instead of replacing them; deviations, suggested tolerances and ``TIGHT`` are then judged
over all draws, of every machine, against the unchanged stored values, and each chapter keeps
the provenance of every measurement (``provenance`` and ``more_provenance``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
STORED = BOOK / "stored_values.json"
KERNEL_SETS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "generic": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"},
}
MARGIN = 2.5
"""Tolerance = at least MARGIN x the largest deviation seen: three non-native draws of a deviation
whose spread is unknown give its largest value only roughly; 2.5 times it covers a deviation about
twice as large as any seen (see the README's "On another machine")."""


STEPS = (1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9, 10)


def nice_up(x: float) -> float:
    """The least of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9 x 10^k that is >= x."""
    if x <= 0:
        return 0.0
    k = math.floor(math.log10(x))
    for m in STEPS:
        if m * 10 ** k >= x * (1 - 1e-12):
            return float(round(m * 10 ** k, 12))
    return float(10 ** (k + 1))


def chapters_with_checks() -> list[Path]:
    return sorted(p for p in BOOK.glob("*.ipynb") if "check_close(" in p.read_text())


def execute_one(path: Path, env_extra: dict, record: Path, timeout: int) -> tuple[float, float]:
    """Execute ``path`` in a fresh process with ``env_extra`` set: (wall seconds, CPU seconds of the kernel and
    its client; on a shared machine the CPU seconds are the steadier measure)."""
    env = dict(os.environ, **env_extra, AMATA_TOLERANCE_RECORD=str(record))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    code = (
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "NotebookClient(nb, timeout=int(sys.argv[2]), kernel_name='python3',\n"
        "               resources={'metadata': {'path': sys.argv[3]}}).execute()\n"
    )
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(timeout), str(path.parent)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{path.name} failed under {env_extra or 'native kernels'}:\n{tail}")
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t0, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "amata_lib", "book"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def store(chapters: dict[str, dict], provenance: dict) -> None:
    """Write the native values of ``chapters`` into book/stored_values.json (other chapters kept)."""
    data = json.loads(STORED.read_text()) if STORED.exists() else {}
    data["what"] = ("the values of the chapters' tolerance checks in the run whose outputs the chapters store "
                    "(read by amata_lib.book.tolerance.StoredRun; written by scripts/measure_tolerances.py --store)")
    data.setdefault("provenance", {}).update({stem: provenance for stem in chapters})
    data.setdefault("chapters", {})
    for stem, checks in chapters.items():
        data["chapters"][stem] = {label: v["values"]["native"] for label, v in checks.items()}
    data["chapters"] = dict(sorted(data["chapters"].items()))
    STORED.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def summarise(values: dict[str, dict]) -> dict:
    """Per check: the deviation of each draw (kernel set) from the stored value, and whether the tolerance holds it."""
    out = {}
    for label, v in values.items():
        stored, tol, rel = v["stored"], v["tol"], v["rel"]
        devs = {k: abs(x - stored) for k, x in v["values"].items()}
        worst = max(devs.values(), default=0.0)
        bound = (tol or 0.0) + (rel or 0.0) * abs(stored)
        out[label] = {**v, "deviation": devs, "max_deviation": worst, "bound": bound,
                      "suggested": nice_up(MARGIN * worst) if worst > 0 else None,
                      "tight": bound < MARGIN * worst * (1 - 1e-9)}
    return out


def merge_draws(old_entry: dict | None, checks: dict[str, dict]) -> dict[str, dict]:
    """``checks`` with the draws ``old_entry`` (a chapter of a stored measurement) holds for the same labels added.

    A label measured before but not now is kept as it was; the stored value and tolerance are this run's."""
    merged = {label: {k: v[k] for k in ("stored", "tol", "rel", "unit", "values")}
              for label, v in (old_entry or {}).get("checks", {}).items()}
    for label, v in checks.items():
        before = merged.get(label, {}).get("values", {})
        twice = sorted(set(before) & set(v["values"]))
        if twice:
            raise SystemExit(f"{label}: draws {twice} are stored already; choose another --machine tag")
        merged[label] = {**v, "values": {**before, **v["values"]}}
    return merged


def chapter_entry(old_entry: dict | None, provenance: dict, seconds: dict, checks: dict[str, dict]) -> dict:
    """One chapter of the result: provenance (earlier measurements kept), seconds and the summarised checks."""
    if old_entry is None:
        return {"provenance": provenance, "seconds": seconds, "checks": summarise(checks)}
    return {"provenance": old_entry["provenance"],
            "more_provenance": [*old_entry.get("more_provenance", []), provenance],
            "seconds": {**old_entry.get("seconds", {}), **seconds}, "checks": summarise(checks)}


def group(checks: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Checks by table: a check_table entry "title | row | column" goes under its title."""
    out: dict[str, dict[str, dict]] = {}
    for label, v in checks.items():
        out.setdefault(label.split(" | ")[0], {})[label] = v
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="chapters (default: every chapter with a check_close)")
    ap.add_argument("--kernels", nargs="+", default=list(KERNEL_SETS), choices=list(KERNEL_SETS))
    ap.add_argument("--out", type=Path, default=None, help="write the measurement as JSON here")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    ap.add_argument("--machine", default=None,
                    help="record the kernel sets as TAG:KERNEL and add them to the draws stored in --out")
    ap.add_argument("--store", action="store_true",
                    help="make the native run's values the chapters' stored values (book/stored_values.json)")
    args = ap.parse_args(argv)
    if args.store and args.kernels[0] != "native":
        ap.error("--store needs the native kernel set first in --kernels")
    if args.machine is not None and (args.store or args.out is None or ":" in args.machine or not args.machine):
        ap.error("--machine needs --out, not --store, and a non-empty TAG without ':'")
    key = {k: (f"{args.machine}:{k}" if args.machine else k) for k in args.kernels}
    paths = [Path(p).resolve() for p in args.notebooks] or chapters_with_checks()

    chapters, seconds, failed = {}, {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for kernel in args.kernels:
            for path in paths:
                record = Path(tmp) / f"{kernel}-{path.stem}.jsonl"
                try:
                    dt, cpu = execute_one(path, KERNEL_SETS[kernel], record, args.timeout)
                except RuntimeError as exc:
                    print(f"{kernel:8s} FAILED: {exc}", flush=True)
                    failed.append(f"{kernel} {path.name}")
                    continue
                seconds.setdefault(path.stem, {})[key[kernel]] = {"wall": round(dt, 1), "cpu": round(cpu, 1)}
                rows = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
                print(f"{kernel:8s} {path.name}: {len(rows)} checks, {dt:.0f} s wall, {cpu:.0f} s CPU", flush=True)
                chapter = chapters.setdefault(path.stem, {})
                labels = [r["label"] for r in rows]
                twice = sorted({label for label in labels if labels.count(label) > 1})
                if twice:
                    raise SystemExit(f"{path.name}: labels checked more than once: {twice}")
                for r in rows:
                    entry = chapter.setdefault(r["label"], {"stored": r["stored"], "tol": r["tol"], "rel": r["rel"],
                                                            "unit": r["unit"], "values": {}})
                    entry["values"][key[kernel]] = r["value"]
                    if args.store:
                        entry["stored"] = entry["values"]["native"]

    provenance = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores (shared with other jobs)",
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": __import__("torch").__version__, "commit": git_commit(),
        "native_aten_kernels": __import__("torch").backends.cpu.get_cpu_capability(),
        "command": "python scripts/measure_tolerances.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "kernel_sets": {key[k]: KERNEL_SETS[k] for k in args.kernels},
    }
    old = json.loads(args.out.read_text()) if args.out and args.out.exists() else {}
    previous = old.get("chapters", {}) if args.machine else {}  # the draws a --machine run adds to
    chapters = {stem: merge_draws(previous.get(stem), checks) for stem, checks in chapters.items()}
    result = {
        "what": "live values of the chapters' tolerance checks under several PyTorch kernel sets, by chapter",
        "margin_rule": f"tolerance >= {MARGIN} x the largest |live - stored| over the kernel sets, rounded up to "
                       f"{', '.join(f'{m:g}' for m in STEPS[:-1])} x 10^k, and at least one point for an accuracy "
                       f"or one unit of the last printed digit; 'tight' marks a check below {MARGIN} x",
        "seconds": "wall and CPU seconds of one execution of the chapter (kernel and client), per kernel set",
        "chapters": {stem: chapter_entry(previous.get(stem), provenance, seconds[stem], v)
                     for stem, v in chapters.items()},
    }
    if failed:
        print(f"\nfailed: {', '.join(failed)} (nothing stored, nothing written)")
        return 1
    if args.store:
        store(chapters, provenance)
        print(f"stored the native values of {len(chapters)} chapters in {STORED.relative_to(ROOT)}")
    tight = [(stem, label) for stem, c in result["chapters"].items() for label, v in c["checks"].items()
             if v["tight"]]
    for stem, entry in result["chapters"].items():
        c = entry["checks"]
        print(f"\n{stem}")
        for title, entries in group(c).items():
            worst = max(v["max_deviation"] for v in entries.values())
            worst_rel = max((v["max_deviation"] / abs(v["stored"]) if v["stored"] else 0.0) for v in entries.values())
            given = sorted({f"rel {v['rel']:g}" if v["rel"] is not None else f"tol {v['tol']:g}"
                            for v in entries.values()} | {f"tol {v['tol']:g}" for v in entries.values()
                                                          if v["rel"] is not None and v["tol"] is not None})
            n_tight = sum(v["tight"] for v in entries.values())
            print(f"  {'TIGHT ' if n_tight else ''}{title} [{len(entries)}]: {', '.join(given)}; largest deviation "
                  f"{worst:.3g} (relative {worst_rel:.3g})" + (f"; {n_tight} tight" if n_tight else ""))
            for label, v in entries.items():
                if v["tight"]:
                    vals = ", ".join(f"{k} {x:.6g}" for k, x in v["values"].items())
                    print(f"      {label}: stored {v['stored']:.6g}; {vals}")
    if args.out:  # other chapters already in the file are kept
        result["chapters"] = dict(sorted({**old.get("chapters", {}), **result["chapters"]}.items()))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"\nwritten: {args.out}")
    return 1 if tight else 0


if __name__ == "__main__":
    sys.exit(main())
