#!/usr/bin/env bash
# Fetch the third-party browser assets the book serves itself, so that the
# built HTML loads nothing from outside the book.
#
# Today that is MathJax 3 only.  It comes from the npm registry at build time
# and lands in git-ignored folders:
#   .build/vendor/npm/node_modules/mathjax/   the npm package as installed
#   .build/vendor/static/mathjax/             its es5/ folder; _config.yml puts
#                                             .build/vendor/static on
#                                             html_static_path, so it ends up
#                                             in _build/html/_static/mathjax/
# Idempotent: once the right version is there, nothing is fetched again.
# Offline use: a filled npm cache suffices (npm --prefer-offline), or point
# AMATA_MATHJAX_ES5 at an existing MathJax 3 `es5` folder to skip npm.
set -euo pipefail

MATHJAX_VERSION="${AMATA_MATHJAX_VERSION:-3.2.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENDOR="$ROOT/.build/vendor"
DEST="$VENDOR/static/mathjax"
STAMP="$DEST/.amata-version"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$MATHJAX_VERSION" && -f "$DEST/tex-mml-chtml.js" ]]; then
  echo "vendor_assets: MathJax $MATHJAX_VERSION already in ${DEST#$ROOT/}"
  exit 0
fi

if [[ -n "${AMATA_MATHJAX_ES5:-}" ]]; then
  SRC="$AMATA_MATHJAX_ES5"
  if [[ ! -f "$SRC/tex-mml-chtml.js" ]]; then
    echo "vendor_assets: AMATA_MATHJAX_ES5=$SRC has no tex-mml-chtml.js (want MathJax 3's es5/ folder)" >&2
    exit 1
  fi
else
  if ! command -v npm >/dev/null 2>&1; then
    cat >&2 <<MSG
vendor_assets: ERROR: 'npm' was not found on PATH.
  The book serves MathJax 3 from its own files and fetches it from the npm
  registry at build time (package mathjax@$MATHJAX_VERSION).
  Fix one of:
    * install Node.js + npm, e.g. 'apt-get install -y nodejs npm' (Debian/Ubuntu)
      or 'conda install -c conda-forge nodejs', then re-run this script;
    * or set AMATA_MATHJAX_ES5=/path/to/mathjax/es5 (an unpacked MathJax 3).
MSG
    exit 1
  fi
  mkdir -p "$VENDOR/npm"
  # A private package.json keeps npm from walking up to another project.
  [[ -f "$VENDOR/npm/package.json" ]] || echo '{"name":"amata-book-vendor","private":true}' > "$VENDOR/npm/package.json"
  echo "vendor_assets: npm install mathjax@$MATHJAX_VERSION -> ${VENDOR#$ROOT/}/npm"
  npm install --prefix "$VENDOR/npm" --no-audit --no-fund --no-save \
      --prefer-offline --loglevel=error "mathjax@$MATHJAX_VERSION"
  SRC="$VENDOR/npm/node_modules/mathjax/es5"
  if [[ ! -f "$SRC/tex-mml-chtml.js" ]]; then
    echo "vendor_assets: npm finished but $SRC/tex-mml-chtml.js is missing" >&2
    exit 1
  fi
fi

rm -rf "$DEST"
mkdir -p "$DEST"
cp -R "$SRC/." "$DEST/"
echo "$MATHJAX_VERSION" > "$STAMP"
echo "vendor_assets: MathJax $MATHJAX_VERSION copied to ${DEST#$ROOT/}"
