"""Accelerated adversarial training methods, one file each, and the registry of every maximizer by name.

The paper's second claim is that Amata combines with other speed-ups. Each method here
is an inner maximizer of the trainer's protocol (see :func:`amata_lib.train`); its
Amata+ variant is the same class driven by an annealing schedule or a weak-early option.

Two kinds of method, both :class:`~amata_lib.core.maximizers.Maximizer` subclasses:

* **perturb, then step** (:class:`FastMaximizer`, :class:`ATTAMaximizer`): they
  implement ``perturb(model, x, y, plan, index) -> x_adv`` like PGD and keep the base
  class's :meth:`~amata_lib.core.maximizers.Maximizer.step` (attack, then one parameter step).
* **own step** (:class:`FreeMaximizer`, :class:`YOPOMaximizer`): the method interleaves
  parameter gradients with its attack, so it overrides ``step`` and reports every full
  pass of the minibatch, training included. Their passes run in ``train()`` mode (each
  is a training pass), unlike the attack-only passes of the first kind.

Schedules give ``plan.steps`` and ``plan.alpha``; what they mean per method:

==========  ========================================  =====================================
method      ``plan.steps``                            ``plan.alpha``
==========  ========================================  =====================================
Free        replays ``m`` of each minibatch           signed step of the carried delta
Fast        ignored (one FGSM step)                   FGSM step (Wong et al.: 1.25 eps)
YOPO        full passes ``m`` of YOPO-m-n             step of each cheap first-layer update
ATTA        PGD steps per epoch on the stored delta   PGD step
N-FGSM      ignored (one FGSM step)                   FGSM step (their alpha = eps)
==========  ========================================  =====================================

N-FGSM is not an Amata+ method of the paper: it is what a reader in 2026 would use
instead (one step from strong noise), compared with Amata in ``digits-rivals`` and
``mnist-verdict-20k``.
"""
from __future__ import annotations

import inspect

from ..core.maximizers import Clean, FATMaximizer, FOSCMaximizer, Maximizer, PGDMaximizer
from ..infra.checks import check_choice
from ..infra.errors import UserError
from .atta import ATTAMaximizer
from .fast import EarlyStopRollback, FastMaximizer
from .free import FreeMaximizer
from .nfgsm import NFGSMMaximizer
from .yopo import YOPOMaximizer

__all__ = ["ATTAMaximizer", "EarlyStopRollback", "FastMaximizer", "FreeMaximizer", "MAXIMIZERS", "NFGSMMaximizer",
           "YOPOMaximizer", "build_maximizer"]

MAXIMIZERS: dict[str, type[Maximizer]] = {
    "clean": Clean, "pgd": PGDMaximizer, "fosc": FOSCMaximizer, "fat": FATMaximizer,
    "free": FreeMaximizer, "fast": FastMaximizer, "yopo": YOPOMaximizer, "atta": ATTAMaximizer,
    "n-fgsm": NFGSMMaximizer}
"""Every inner maximizer by the name the command line and the configs use."""


def build_maximizer(name: str, eps: float, **kwargs) -> Maximizer:
    """Construct the maximizer registered as ``name`` in :data:`MAXIMIZERS` with radius ``eps``.

    ``kwargs`` go to its constructor (e.g. ``c_max`` for ``"fosc"``, ``budget`` for
    ``"fat"``, ``n`` and ``layer`` for ``"yopo"``, ``reset`` for ``"atta"``); ``"clean"``
    takes none and ignores ``eps``.

    Raises
    ------
    UserError
        Unknown ``name``, a keyword the maximizer does not take, or a bad value.
    """
    cls = MAXIMIZERS[check_choice("name", name, sorted(MAXIMIZERS))]
    params = [p for p in inspect.signature(cls).parameters if p != "eps"]
    unknown = [key for key in kwargs if key not in params]
    if unknown:
        raise UserError(f"maximizer {name!r} has no parameter {unknown[0]!r}; allowed: {params}")
    return cls() if cls is Clean else cls(eps, **kwargs)
