"""Inner maximizers: given a clean batch and an epoch's :class:`~amata_lib.schedules.Plan`,
produce the batch that the outer (parameter) step trains on.

The trainer combines a schedule (which plan, when) with a maximizer (how to use the
plan). ERM is the maximizer that returns the clean batch.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .attacks import LOSSES, pgd
from .schedules import Plan


class Clean:
    """ERM: train on the clean batch; costs no extra pass."""

    name = "erm"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None) -> torch.Tensor:
        return x

    def passes(self, plan: Plan | None) -> int:
        """Extra forward+backward passes per minibatch (none)."""
        return 0


class PGDMaximizer:
    """PGD with the plan's ``steps`` and ``alpha`` inside an L-infinity ball of radius ``eps``.

    ``random_start=True`` (default) starts from a uniform point in the ball as in
    Madry et al.; the paper's Algorithm 1 as printed starts at the clean input,
    which ``random_start=False`` reproduces.
    """

    name = "pgd"

    def __init__(self, eps: float, random_start: bool = True, loss: str = "ce") -> None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.eps = float(eps)
        self.random_start = random_start
        self.loss = loss

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None) -> torch.Tensor:
        if plan is None:
            raise ValueError("plan must be a Plan for PGDMaximizer, got None")
        return pgd(model, x, y, eps=self.eps, alpha=plan.alpha, steps=plan.steps,
                   random_start=self.random_start, loss=self.loss)

    def passes(self, plan: Plan | None) -> int:
        """Extra forward+backward passes per minibatch: one per ascent step."""
        return 0 if plan is None else plan.steps
