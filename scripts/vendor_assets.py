#!/usr/bin/env python
"""Copy the third-party browser assets the book serves itself, so that the built
HTML loads nothing from outside the book.  Needs only Python: no Node.js, no npm,
no network.

Today that is MathJax 3.2.2 only (its ``es5/`` build: the ``tex-mml-chtml.js``
entry script, its components and its woff fonts).  It comes from the Python wheel
``sphinx-mathjax-offline`` (a dependency of the ``book`` extra in pyproject.toml),
is checked file by file against ``scripts/mathjax-3.2.2-es5.sha256`` and lands in
the git-ignored folder ``.build/vendor/static/mathjax/``; _config.yml puts
``.build/vendor/static`` on ``html_static_path``, so Sphinx copies it to
``_build/html/_static/mathjax/``.

    python scripts/vendor_assets.py          # idempotent: does nothing when up to date
    AMATA_MATHJAX_ES5=/path/to/mathjax/es5 python scripts/vendor_assets.py   # use another copy

Which wheel, and why (checked 2026-12 against the official npm release)
-----------------------------------------------------------------------
``scripts/mathjax-3.2.2-es5.sha256`` is the sha256 of every file (106) under
``package/es5/`` of the npm registry's ``mathjax@3.2.2`` tarball (registry
shasum c754d7b46a679d7f3fa03543d6b8bf124ddf9f6b, integrity sha512-Bt+SSVU8eBG27z...
W0OhGw==): exactly the files the book used to get from ``npm install``.

* ``sphinx-mathjax-offline`` 0.0.2 (wheel sha256 2064181...62c4) ships
  ``sphinx-mathjax-offline/static/mathjax/``: the same 106 files, every one
  byte-identical to the npm release.  This script copies from it.
* ``django-static-mathjax`` 3.2.2.1 is NOT byte-identical: it ships the
  MathJax-src (``mathjax-full``) tree with its own es5 build; 93 of its 106 es5
  files match, 13 differ -- among them ``tex-mml-chtml.js``, the script the
  book loads, and ``a11y/sre.js``, ``ui/menu.js``, ``adaptors/liteDOM.js``.  Each
  difference is a no-op self-assignment left by the TypeScript compiler in the
  npm build (``(r=r,...)``, ``(o=o).attributes``, ``t=t;``, 3 per file) that the
  wheel's rebuild leaves out: most likely the same code, but not the same bytes,
  so it is not used.

The check runs on every vendoring: a wheel whose files differ from the manifest
(another release, a broken download) stops the build with the names of the
files.  The copy is stamped with the manifest's own sha256; when the stamp
matches and the entry script is there, nothing is copied again.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "scripts" / "mathjax-3.2.2-es5.sha256"
DEST = ROOT / ".build" / "vendor" / "static" / "mathjax"
STAMP = DEST / ".amata-manifest"
ENTRY = "tex-mml-chtml.js"
WHEEL = "sphinx-mathjax-offline"
WHEEL_DIR = "sphinx-mathjax-offline/static/mathjax/"


def fail(message: str) -> None:
    sys.exit(f"vendor_assets: ERROR: {message}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest() -> dict[str, str]:
    entries = {}
    for line in MANIFEST.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            entries[name] = digest
    return entries


def wheel_files() -> dict[str, Path]:
    """Relative name -> installed path of every MathJax file in the wheel."""
    try:
        dist = metadata.distribution(WHEEL)
    except metadata.PackageNotFoundError:
        fail(f"the Python package '{WHEEL}' is not installed in {sys.prefix}.\n"
             "  It is part of the book extra: `make install`, or "
             f"`{Path(sys.executable).name} -m pip install -e '.[book]'`.")
    files = {str(f)[len(WHEEL_DIR):]: Path(dist.locate_file(f)) for f in dist.files or []
             if str(f).startswith(WHEEL_DIR)}
    if not files:
        fail(f"'{WHEEL}' {dist.version} has no files under {WHEEL_DIR}")
    return files


def folder_files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def check(files: dict[str, Path], expected: dict[str, str], source: str) -> None:
    """Every manifest file present with its sha256, and nothing else."""
    missing = sorted(set(expected) - set(files))
    extra = sorted(set(files) - set(expected))
    changed = sorted(n for n in set(expected) & set(files) if sha256(files[n]) != expected[n])
    if missing or extra or changed:
        lines = [f"{source} is not MathJax 3.2.2's es5 build as released on npm "
                 f"({MANIFEST.relative_to(ROOT)}):"]
        for label, names in (("missing", missing), ("not in the release", extra), ("different bytes", changed)):
            if names:
                lines.append(f"  {label} ({len(names)}): {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")
        fail("\n".join(lines))


def main() -> int:
    manifest_id = sha256(MANIFEST)
    override = os.environ.get("AMATA_MATHJAX_ES5")
    if not override and STAMP.is_file() and STAMP.read_text().strip() == manifest_id and (DEST / ENTRY).is_file():
        print(f"vendor_assets: MathJax 3.2.2 already in {DEST.relative_to(ROOT)}")
        return 0
    if override:
        src = Path(override)
        if not (src / ENTRY).is_file():
            fail(f"AMATA_MATHJAX_ES5={src} has no {ENTRY} (want MathJax 3's es5/ folder)")
        files, source, stamp = folder_files(src), f"AMATA_MATHJAX_ES5={src}", "unverified"
        print(f"vendor_assets: using {source} as it is (not checked against the manifest)")
    else:
        files = wheel_files()
        source = f"{WHEEL} {metadata.version(WHEEL)}"
        check(files, read_manifest(), source)
        stamp = manifest_id
    if DEST.exists():
        shutil.rmtree(DEST)
    for name, path in files.items():
        target = DEST / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    STAMP.write_text(stamp + "\n")
    print(f"vendor_assets: MathJax from {source}: {len(files)} files copied to {DEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
