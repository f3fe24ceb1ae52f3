"""``python -m amata_lib``: see :mod:`amata_lib.cli`."""
import sys

from .cli import main

sys.exit(main())
