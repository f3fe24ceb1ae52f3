"""Adaptive Amata: each epoch's plan chosen online by the greedy criterion C (Eq. 14).

The paper ends with adaptive methods as future work and notes that its criterion
can pick a hyper-parameter greedily, "by solving C(u, t) = 0 for u, which amounts to
maximizing the first term". :class:`Adaptive` does that: at the start of an epoch it
evaluates, on a fixed probe minibatch and at the current weights, the value

    ``V(K) = ||grad_theta l(h_theta(A_{theta, tau/K, K}(x)), y)||**2 - gamma * K``

of every plan of ``G = {(K, tau / K) : K_min <= K <= K_max}`` (the equal-travel plans
Amata itself moves through) and trains the epoch with the maximiser. ``A`` is PGD
without random start (:func:`~amata_lib.study.criterion.plan_value`, as for C), whatever
inner maximizer then uses the plan.

Choices the paper leaves open, made here:

* ``G`` is the equal-travel line of Amata (one plan per ``K``), not a grid over
  ``(alpha, K)``: the criterion-C chapter found that over a grid the maximiser is the weakest plan
  (one short step), which no training would want;
* the probe minibatch is the first ``probe_size`` training examples (fixed, so a
  choice depends only on the weights), attacked in ``eval()`` mode;
* a probe every ``every`` epochs (the epochs in between keep the last choice);
* ``monotone=True`` only allows ``K`` at or above the previous choice (an annealing
  constraint of ours; the greedy reading alone has none); ties go to the smaller ``K``;
* the probe's cost is training cost: its passes (``sum(K + 1)`` over the plans
  evaluated, on ``probe_size`` examples, counted in minibatches of the training batch
  size) and its seconds are added to the epoch's ``passes`` and ``time``, and stored
  apart as ``probe_passes`` and ``probe_time``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..core.schedules import Plan, Schedule, check_range
from ..infra.checks import check_int, check_real
from ..infra.errors import UserError
from .criterion import plan_value


class Adaptive(Schedule):
    """Greedy Eq. 14: per epoch, the plan of ``G = {(K, tau/K)}`` maximising ``||grad_theta l||^2 - gamma K``."""

    needs_model = True

    def __init__(self, k_min: int, k_max: int, tau: float, epochs: int, *, gamma: float, probe_size: int = 128,
                 every: int = 1, monotone: bool = False) -> None:
        check_range(self, k_min, k_max, tau, epochs)
        self.gamma = check_real("gamma", gamma, minimum=0)
        self.probe_size = check_int("probe_size", probe_size)
        self.every = check_int("every", every)
        if not isinstance(monotone, bool):
            raise UserError(f"monotone must be true or false, got {monotone!r}")
        self.monotone = monotone
        self.candidates = [Plan(k, self.tau / k) for k in range(self.k_min, self.k_max + 1)]
        self.chosen: dict[int, Plan] = {}
        self.values: dict[int, dict[int, float]] = {}

    def choose(self, t: int, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> tuple[Plan, int]:
        """The plan of epoch ``t`` and the probe's forward+backward passes on ``x`` (0 without a probe)."""
        if t in self.chosen:
            return self.chosen[t], 0
        previous = self.chosen.get(t - 1)
        if previous is not None and t % self.every:
            self.chosen[t] = previous
            return previous, 0
        options = [p for p in self.candidates
                   if not (self.monotone and previous is not None and p.steps < previous.steps)]
        values = {p.steps: plan_value(model, x, y, p, eps=eps, gamma=self.gamma) for p in options}
        best = max(options, key=lambda p: (values[p.steps], -p.steps))
        self.chosen[t], self.values[t] = best, values
        return best, sum(p.passes for p in options)

    def plan(self, t: int) -> Plan:
        if t not in self.chosen:
            raise UserError(f"the adaptive schedule chooses epoch {t}'s plan during training (Adaptive.choose); "
                            "it has no plan for it yet")
        return self.chosen[t]

    def plans(self) -> list[Plan]:
        """The plans chosen so far, in epoch order."""
        return [self.chosen[t] for t in sorted(self.chosen)]

    def fingerprint(self) -> dict:
        """What decides its choices (the plans themselves depend on training)."""
        return {"candidates": [[p.steps, p.alpha] for p in self.candidates], "gamma": self.gamma,
                "probe_size": self.probe_size, "every": self.every, "monotone": self.monotone}

    def restore(self, history: Sequence[dict]) -> None:
        """Take the plans of the epochs a resumed run has finished from its history."""
        self.chosen = {rec["epoch"] - 1: Plan(rec["steps"], rec["alpha"]) for rec in history}

    @property
    def max_steps(self) -> int:
        return self.k_max

    def __repr__(self) -> str:
        return (f"Adaptive(k_min={self.k_min}, k_max={self.k_max}, tau={self.tau:g}, epochs={self.epochs}, "
                f"gamma={self.gamma:g}, probe_size={self.probe_size}, every={self.every}, monotone={self.monotone})")

