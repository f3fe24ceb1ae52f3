"""`pytest --nbval` as a reader types it, at the repository root.

* ``pytest`` (no ``--nbval``) runs the unit tests in tests/ only (``testpaths``).
* ``pytest --nbval`` runs every chapter under book/ exactly as ``make test`` does:
  strict nbval, the kernel of this environment (``--nbval-current-env``) and the
  book's sanitizer (``--nbval-sanitize-with book/nbval_sanitize.cfg``).
* ``pytest --nbval book/02_amata.ipynb`` runs one chapter the same way.

Options given on the command line win: an explicit ``--nbval-sanitize-with`` or
``--nbval-kernel-name`` is kept, and explicit paths are collected as given.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BOOK = ROOT / "book"
SANITIZE = BOOK / "nbval_sanitize.cfg"


def pytest_configure(config):
    opt = config.option
    if not (getattr(opt, "nbval", False) or getattr(opt, "nbval_lax", False)):
        return
    if not opt.nbval_kernel_name:
        opt.nbval_current_env = True
    if opt.nbval_sanitize_with is None:
        opt.nbval_sanitize_with = str(SANITIZE)
    # No paths typed: pytest took `testpaths` (tests/, which holds no notebook). Test the book instead.
    if config.args_source == config.ArgsSource.TESTPATHS:
        config.args[:] = [str(BOOK)]
