"""amata_lib: adversarial training accelerated by annealing (Amata, Ye et al., AAAI 2021).

Algorithm 1 of the paper is three pieces of :mod:`amata_lib.core`: a schedule gives
epoch ``t``'s plan ``(K_t, alpha_t)`` (:class:`Amata`), :func:`pgd` solves the inner
maximization with it, and one epoch (:func:`amata_lib.core.epoch.run_epoch`) hands every
minibatch to an inner maximizer; :func:`train` is the outer loop. :func:`run` trains a
whole run from its description (:class:`RunSpec`), as the command line and the
experiment configs do.

The names below are the front door; everything else is importable from its
subpackage (``CONTRIBUTING.md`` draws the map): ``amata_lib.core`` (attacks, schedules,
maximizers, training, evaluation, models), ``amata_lib.methods`` (Free, Fast, YOPO,
ATTA, N-FGSM), ``amata_lib.study`` (criterion C, optimal control, convergence,
landscapes, verdicts, adaptive Amata), ``amata_lib.infra`` (data, checkpoints, results)
and ``amata_lib.book`` (the chapters' widgets and figures).
"""
from __future__ import annotations

import signal
import sys

# ``python -m amata_lib`` imports this package before its __main__: while Python is still locating
# the module (sys.argv[0] == "-m"), a Ctrl-C inside torch's or NumPy's imports would leave them
# half-initialised and print a traceback, so it is held back until the imports are done (see __main__).
_held: list[int] = []
_previous = signal.signal(signal.SIGINT, lambda *_: _held.append(1)) if sys.argv[:1] == ["-m"] else None
try:
    from .core.attacks import fgsm, pgd
    from .core.models import DigitsCNN, LeNet, PreActResNet18, SmallMNIST
    from .core.schedules import Amata, Constant, Exponential, FromFunction, Plan, Step
    from .core.training import TrainOptions, train
    from .infra.data import load
    from .infra.version import VERSION as __version__
    from .spec import RunSpec, run
finally:
    if _previous is not None:
        signal.signal(signal.SIGINT, _previous)
interrupted_at_start = bool(_held)

__all__ = ["Amata", "Constant", "DigitsCNN", "Exponential", "FromFunction", "LeNet", "Plan", "PreActResNet18",
           "RunSpec", "SmallMNIST", "Step", "TrainOptions", "fgsm", "load", "pgd", "run", "train", "__version__"]
