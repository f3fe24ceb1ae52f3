#!/usr/bin/env bash
# Build the book's HTML into _build/html, fully offline-capable.
#
#   bash scripts/build_book.sh            # uses $PYTHON, else .venv/bin/python, else python3
#   PYTHON=/path/to/python bash scripts/build_book.sh
#
# Steps: copy MathJax 3 from the installed Python wheel (scripts/vendor_assets.py,
# idempotent, checked file by file against the npm release); make the download
# files, the source archive (git archive of HEAD; skipped with one line when there
# is no .git) and the library's wheel (scripts/site_downloads.py, a few seconds),
# which land in _build/html/downloads/; then
# `jupyter-book build . -W -n --keep-going`: any Sphinx warning fails the build.
# The chapters are NOT executed here (execute_notebooks: "off" in _config.yml):
# the pages show the outputs stored in book/*.ipynb, the same outputs that
# `make test` re-computes and compares under strict nbval.  To refresh them run
# `make notebooks` (or `make book EXECUTE=1`, which does both).  Every page is
# rebuilt (--all); set AMATA_BOOK_INCREMENTAL=1 to rebuild only the pages whose
# sources changed.  Extra arguments go to `jupyter-book build`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
  PY="$ROOT/.venv/bin/python"
else
  PY="$(command -v python3 || true)"
fi
if [[ -z "$PY" ]] || ! "$PY" -c 'import jupyter_book' >/dev/null 2>&1; then
  echo "build_book: ERROR: no Python with jupyter-book found (tried ${PY:-python3})." >&2
  echo "  Create the venv first (see README), or set PYTHON=/path/to/python." >&2
  exit 1
fi
# Notebooks run on the kernel 'python3'.  The venv's kernelspec (and
# ipykernel's built-in one) starts `python`, so this Python's bin/ goes first
# on PATH: the chapters then run in the same environment as the build.
export PATH="$(dirname "$PY"):$PATH"

"$PY" "$ROOT/scripts/vendor_assets.py"
"$PY" "$ROOT/scripts/site_downloads.py"

JB=("$PY" -c 'import sys; from jupyter_book.cli.main import main; sys.argv[0] = "jupyter-book"; sys.exit(main())')
echo "build_book: $("${JB[@]}" --version 2>/dev/null | tr '\n' ' ' || true)"
start=$(date +%s)
ALL=(--all)
[[ "${AMATA_BOOK_INCREMENTAL:-0}" == "1" ]] && ALL=()
set +e
"${JB[@]}" build . -W -n --keep-going "${ALL[@]}" "$@"
rc=$?
set -e
end=$(date +%s)
if [[ $rc -ne 0 ]]; then
  echo "build_book: FAILED (exit $rc) after $((end - start)) s; see the warnings above and _build/html/reports/ for notebook tracebacks." >&2
  exit $rc
fi
if [[ ! -f "$ROOT/_build/html/_static/mathjax/tex-mml-chtml.js" ]]; then
  echo "build_book: FAILED: MathJax was not copied to _build/html/_static/mathjax" >&2
  exit 1
fi
if ! ls "$ROOT"/_build/html/downloads/amata_lib-*.whl >/dev/null 2>&1; then
  echo "build_book: FAILED: the wheel was not copied to _build/html/downloads" >&2
  exit 1
fi
echo "build_book: OK in $((end - start)) s -> _build/html/index.html"
