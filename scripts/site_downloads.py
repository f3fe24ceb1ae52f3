#!/usr/bin/env python
"""Make the files the built book offers for download: the repository's source archive and
the library's wheel, in ``.build/site/downloads/``.

    python scripts/site_downloads.py          # scripts/build_book.sh runs it before Sphinx

_config.yml puts ``.build/site`` on ``html_extra_path``, so Sphinx copies the folder to
``_build/html/downloads/``; the "Get the code" page (book/get_the_code.md) links the files
with the ``{download-file}`` role of ``book/_ext/amata_site.py``, which reads the
``manifest.json`` written here.

What is made
------------
* ``amata-book-<version>-<commit>.tar.gz``: ``git archive`` of HEAD (the committed files
  only: uncommitted changes are not in it, and a line says so). Nothing that .gitignore
  ignores goes in: tracked files that match .gitignore are excluded, ``data/mnist*`` is
  always excluded, and every member is checked with ``git check-ignore`` afterwards.
  Without a ``.git`` (an unpacked archive, say) it is skipped with one line, and the page
  says it is not in that build.
* ``amata_lib-<version>-py3-none-any.whl``: ``pip wheel --no-deps`` of the package, built
  from the archive's files (HEAD), or from the package's files in the working tree when
  there is no git. With setuptools >= 70.1 in this Python the build is offline
  (``--no-build-isolation --no-index``); otherwise pip fetches setuptools from the package
  index into an isolated build environment, and a line says so.
* ``SHA256SUMS`` (``sha256sum -c SHA256SUMS``) and ``manifest.json`` (names, sizes, hashes,
  the commit, why a file was skipped).
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / ".build" / "site" / "downloads"
PACKAGE = "amata_lib"
# Whatever .gitignore says, these never go into the archive.
ALWAYS_EXCLUDED = ("data/mnist*",)
# Inside the wheel: the package and its metadata only.
WHEEL_TOP = (f"{PACKAGE}/", f"{PACKAGE}-")


def say(message: str) -> None:
    print(f"site_downloads: {message}", flush=True)


def fail(message: str) -> None:
    sys.exit(f"site_downloads: ERROR: {message}")


def git(*args: str, stdin: str | None = None, check: bool = True) -> str:
    res = subprocess.run(["git", "-C", str(ROOT), *args], input=stdin, capture_output=True, text=True)
    if check and res.returncode != 0:
        fail(f"git {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def version() -> str:
    """VERSION of amata_lib/infra/version.py, read without importing the package (and torch)."""
    tree = ast.parse((ROOT / PACKAGE / "infra" / "version.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "VERSION" for t in node.targets):
            return ast.literal_eval(node.value)
    fail(f"no VERSION in {PACKAGE}/infra/version.py")


def describe(path: Path) -> dict:
    data = path.read_bytes()
    return {"name": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def why_no_git() -> str | None:
    """None when the archive can be made, else the reason in a few words."""
    if not (ROOT / ".git").exists():
        return "no .git in the source tree"
    if shutil.which("git") is None:
        return "git is not installed"
    res = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True)
    return None if res.returncode == 0 else "the repository has no commit"


def make_archive(out: Path, release: str) -> tuple[Path, str, bool]:
    """``git archive`` of HEAD as ``out/amata-book-<release>-<commit>.tar.gz``; (path, commit, dirty)."""
    commit = git("rev-parse", "HEAD").strip()
    short = commit[:12]
    prefix = f"amata-book-{release}-{short}"
    ignored_tracked = [p for p in git("ls-files", "-ci", "--exclude-standard", "-z").split("\0") if p]
    excludes = [f":(exclude,glob){p}" for p in ALWAYS_EXCLUDED] + [f":(exclude,glob){p}/**" for p in ALWAYS_EXCLUDED]
    excludes += [f":(exclude,literal){p}" for p in ignored_tracked]
    path = out / f"{prefix}.tar.gz"
    git("archive", "--format=tar.gz", f"--prefix={prefix}/", "-o", str(path), "HEAD", "--", ".", *excludes)
    with tarfile.open(path) as tar:
        names = [m.name[len(prefix) + 1:] for m in tar.getmembers() if m.isfile()]
    if not names:
        fail(f"{path.name} is empty")
    flagged = git("check-ignore", "--no-index", "--stdin", stdin="\n".join(names) + "\n", check=False).split()
    flagged += [n for n in names if n.startswith("data/mnist")]
    if flagged:
        fail(f"{path.name} holds files that .gitignore ignores: {', '.join(sorted(set(flagged))[:8])}")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    return path, commit, dirty


def offline_setuptools() -> bool:
    """Can pip build the wheel with this Python's own setuptools (no download)?"""
    try:
        from importlib.metadata import version as dist_version

        parts = dist_version("setuptools").split(".")
        return (int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0) >= (70, 1)
    except Exception:
        return False


def package_files(dest: Path) -> None:
    """The files the wheel is built from, copied from the working tree (no git): no caches, no build output."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / PACKAGE, dest / PACKAGE,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*"))


def make_wheel(out: Path, source: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out)]
    if offline_setuptools():
        cmd += ["--no-build-isolation", "--no-index"]
    else:
        say("setuptools >= 70.1 is not installed here: pip builds the wheel in an isolated environment, "
            "fetching setuptools from the package index")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    res = subprocess.run([*cmd, str(source)], capture_output=True, text=True, env=env, cwd=source)
    wheels = sorted(out.glob(f"{PACKAGE}-*.whl"))
    if res.returncode != 0 or len(wheels) != 1:
        fail(f"pip wheel failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    wheel = wheels[0]
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    stray = [n for n in names if not n.startswith(WHEEL_TOP) or "__pycache__" in n or n.endswith(".pyc")]
    if stray or f"{PACKAGE}/__init__.py" not in names:
        fail(f"{wheel.name} holds files outside the package: {stray[:8]}")
    return wheel


def main() -> int:
    start = time.monotonic()
    release = version()
    if DEST.exists():
        shutil.rmtree(DEST)
    DEST.mkdir(parents=True)
    manifest: dict = {"version": release, "commit": None, "dirty": None, "files": {}}
    with tempfile.TemporaryDirectory(prefix="amata-downloads-") as tmp:
        tmp = Path(tmp)
        reason = why_no_git()
        if reason is None:
            archive, commit, dirty = make_archive(DEST, release)
            manifest.update(commit=commit, dirty=dirty)
            manifest["files"]["source"] = describe(archive)
            if dirty:
                say(f"note: the working tree has uncommitted changes; the archive and the wheel are HEAD "
                    f"({commit[:12]}) without them")
            with tarfile.open(archive) as tar:
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp / "src", **kwargs)
            source = next((tmp / "src").iterdir())
        else:
            say(f"no source archive: {reason} (the wheel is built from the working tree)")
            manifest["files"]["source"] = {"skipped": reason}
            source = tmp / "src"
            source.mkdir()
            package_files(source)
        wheel = make_wheel(tmp / "wheel", source)
        shutil.copy2(wheel, DEST / wheel.name)
        manifest["files"]["wheel"] = describe(DEST / wheel.name)
    made = [f for f in manifest["files"].values() if "name" in f]
    (DEST / "SHA256SUMS").write_text("".join(f"{f['sha256']}  {f['name']}\n" for f in made))
    manifest["files"]["sums"] = describe(DEST / "SHA256SUMS")
    (DEST / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    sizes = ", ".join(f"{f['name']} ({f['bytes'] / 1e6:.2f} MB)" for f in made)
    say(f"{sizes} -> {DEST.relative_to(ROOT)} in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
