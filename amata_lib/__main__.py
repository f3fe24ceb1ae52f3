"""``python -m amata_lib``: see :mod:`amata_lib.cli`.

Importing torch, scikit-learn and SciPy takes seconds, and a Ctrl-C that lands inside
a third-party import can leave that package half-initialised (NumPy then fails with a
RecursionError, not a KeyboardInterrupt). So Ctrl-C is held back while the libraries
load, and honoured, without a traceback, once they have.
"""
import signal
import sys

from . import interrupted_at_start

held: list[int] = [1] if interrupted_at_start else []
previous = signal.signal(signal.SIGINT, lambda *_: held.append(1))
try:
    from .cli import main, preload

    preload()
finally:
    signal.signal(signal.SIGINT, previous)
if held:
    print("amata_lib: interrupted", file=sys.stderr)
    sys.exit(130)
sys.exit(main())
