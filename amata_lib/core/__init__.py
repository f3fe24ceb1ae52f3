"""The core of Algorithm 1: attacks on one engine, schedules, inner maximizers, one epoch, the trainer, evaluation.

Read in this order: :mod:`~amata_lib.core.schedules` (epoch ``t`` -> plan ``(K_t, alpha_t)``),
:mod:`~amata_lib.core.attacks` (PGD, Eq. 2), :mod:`~amata_lib.core.maximizers` (what one
minibatch does with a plan), :mod:`~amata_lib.core.epoch` (one epoch) and
:mod:`~amata_lib.core.training` (the outer loop). Nothing here imports from
``amata_lib.methods``, ``amata_lib.study`` or ``amata_lib.book``.
"""
