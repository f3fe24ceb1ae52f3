"""``python -m amata_lib``: see :mod:`amata_lib.cli`."""
import sys

try:  # importing torch takes seconds: Ctrl-C then must not print a traceback either
    from .cli import main
except KeyboardInterrupt:
    print("amata_lib: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
