"""How far a schedule is from optimal: the paper's criterion C (Eq. 13-14) and, for comparison, FOSC (Eq. 15).

Eq. 14 is the greedy, one-step form of C. At the current parameters ``theta_t``
and the epoch's plan ``u_t = (alpha_t, K_t)`` it compares the plan's value

    ``V(alpha, K) = ||grad_theta l(h_theta(A_{theta, alpha, K}(x)), y)||**2 - gamma * K``

with the best value over a search space ``G`` of plans:
``C = max_{(alpha, K) in G} V(alpha, K) - V(alpha_t, K_t)``. ``A`` is the library's
:func:`~amata_lib.attacks.pgd`, run with ``random_start=False`` (start at ``x`` as in
the paper's Algorithm 1) so that ``V`` is a deterministic function of the plan.
The maximum is searched by Bayesian optimisation (hyperopt's TPE, as the paper
does) with a fixed seed and a fixed number of evaluations.

Choices the paper leaves open, made here:

* the loss is the mean cross-entropy over the batch, its gradient is taken with
  respect to every trainable parameter, in ``eval()`` mode (the mode the trainer
  attacks in), with :func:`torch.autograd.grad`, so nothing accumulates in ``.grad``;
* the current plan is always one of the candidates of the maximum, so ``C >= 0``
  by construction even when the search never samples the plan (or the plan lies
  outside ``G``), and ``C = 0`` when ``G`` holds only the plan;
* FOSC uses the L1 norm of the input gradient: for the L-infinity ball the
  paper's generic norm is the dual norm, which makes FOSC zero exactly at the
  ball's first-order stationary points.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe
from torch import nn

from ._checks import check_int, check_positive, check_real, check_strict_int
from ._nn import eval_mode, param_grad_sq_norm
from .attacks import pgd
from .errors import UserError
from .schedules import Plan


@dataclass(frozen=True)
class SearchSpace:
    """The space ``G`` of plans: ``K`` integer in ``[k_lo, k_hi]``, ``alpha`` log-uniform in ``[alpha_lo, alpha_hi]``.

    Equal bounds make that coordinate a constant.
    """

    k_lo: int = 1
    k_hi: int = 40
    alpha_lo: float = 0.01
    alpha_hi: float = 0.2

    def __post_init__(self) -> None:
        for name in ("k_lo", "k_hi"):
            value = getattr(self, name)
            check_strict_int(name, value)
        if self.k_hi < self.k_lo:
            raise UserError(f"k_hi must be >= k_lo={self.k_lo}, got {self.k_hi!r}")
        for name in ("alpha_lo", "alpha_hi"):
            value = getattr(self, name)
            check_positive(name, value)
        if self.alpha_hi < self.alpha_lo:
            raise UserError(f"alpha_hi must be >= alpha_lo={self.alpha_lo:g}, got {self.alpha_hi!r}")

    def hyperopt(self) -> dict:
        """The space in hyperopt's terms; ``K`` is a uniform real rounded to the nearest integer."""
        steps = (self.k_lo if self.k_lo == self.k_hi
                 else hp.quniform("steps", self.k_lo - 0.5, self.k_hi + 0.5, 1))
        step_size = (self.alpha_lo if self.alpha_lo == self.alpha_hi
                     else hp.loguniform("alpha", math.log(self.alpha_lo), math.log(self.alpha_hi)))
        return {"steps": steps, "alpha": step_size}

    def plan(self, sample: dict) -> Plan:
        """The plan of a hyperopt sample, ``K`` clipped into ``[k_lo, k_hi]``."""
        steps = min(max(int(round(float(sample["steps"]))), self.k_lo), self.k_hi)
        return Plan(steps, float(sample["alpha"]))


@dataclass(frozen=True)
class CriterionResult:
    """Outcome of :func:`criterion_c`: ``c``, the best plan found, both values, and how many were evaluated."""

    c: float
    best: Plan
    best_value: float
    plan_value: float
    evaluations: int


def plan_value(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan, *, eps: float,
               gamma: float) -> float:
    """``V(alpha, K)``: squared parameter-gradient norm at PGD's point (no random start) minus ``gamma * K``."""
    if not isinstance(plan, Plan):
        raise UserError(f"plan must be a Plan, got {plan!r}")
    with eval_mode(model):
        x_adv = pgd(model, x, y, eps=eps, alpha=plan.alpha, steps=plan.steps, random_start=False)
        return param_grad_sq_norm(model, x_adv, y) - gamma * plan.steps


def criterion_c(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan, *, eps: float, gamma: float,
                space: SearchSpace = SearchSpace(), budget: int = 20, seed: int = 0) -> CriterionResult:
    """The greedy criterion C of Eq. 14 at the model's current parameters.

    Parameters
    ----------
    model : nn.Module
        Classifier on inputs in [0, 1]; its mode is restored afterwards.
    x, y : torch.Tensor
        A fixed batch (keep it fixed across calls to compare values).
    plan : Plan
        The schedule's current ``(K_t, alpha_t)``.
    eps : float
        L-infinity radius of the attack.
    gamma : float
        Cost per inner step in ``R(u) = gamma * K`` (the paper uses 0.04 for LeNet/MNIST).
    space : SearchSpace
        The plans ``G`` the maximum runs over.
    budget : int
        Number of plans TPE evaluates (the current plan is evaluated in addition).
        The first ``max(1, budget // 3)`` are TPE's random start-up draws.
    seed : int
        Seed of TPE's random generator; with ``random_start=False`` attacks the
        result is a deterministic function of the inputs.

    Returns
    -------
    CriterionResult
        ``c = max(best TPE value, plan value) - plan value >= 0`` and the plan attaining it.
    """
    check_real("gamma", gamma, minimum=0)
    check_int("budget", budget)
    check_int("seed", seed, minimum=0)
    if not isinstance(space, SearchSpace):
        raise UserError(f"space must be a SearchSpace, got {space!r}")

    cache: dict[Plan, float] = {}

    def value(candidate: Plan) -> float:
        if candidate not in cache:
            cache[candidate] = plan_value(model, x, y, candidate, eps=eps, gamma=gamma)
        return cache[candidate]

    def objective(sample: dict) -> dict:
        candidate = space.plan(sample)
        return {"loss": -value(candidate), "status": STATUS_OK, "plan": candidate}

    current = value(plan)
    trials = Trials()
    fmin(objective, space.hyperopt(), algo=functools.partial(tpe.suggest, n_startup_jobs=max(1, budget // 3)),
         max_evals=budget, trials=trials, rstate=np.random.default_rng(seed), show_progressbar=False)
    found = trials.best_trial["result"]
    best, best_value = (found["plan"], -found["loss"]) if -found["loss"] > current else (plan, current)
    return CriterionResult(c=best_value - current, best=best, best_value=best_value, plan_value=current,
                           evaluations=len(cache))
