"""How far a schedule is from optimal: the paper's criterion C (Eq. 13-14) and, for comparison, FOSC (Eq. 15).

Eq. 14 is the greedy, one-step form of C. At the current parameters ``theta_t``
and the epoch's plan ``u_t = (alpha_t, K_t)`` it compares the plan's value

    ``V(alpha, K) = ||grad_theta l(h_theta(A_{theta, alpha, K}(x)), y)||**2 - gamma * K``

with the best value over a search space ``G`` of plans:
``C = max_{(alpha, K) in G} V(alpha, K) - V(alpha_t, K_t)``. ``A`` is the library's
:func:`~amata_lib.core.attacks.pgd`, run with ``random_start=False`` (start at ``x`` as in
the paper's Algorithm 1) so that ``V`` is a deterministic function of the plan.
The maximum is searched by Bayesian optimisation (hyperopt's TPE, as the paper
does) with a fixed seed and a fixed number of evaluations (:func:`criterion_c`).
A small budget finds a good plan, not necessarily the best, so that ``C`` is a
lower bound. Where ``G`` is a small grid (:class:`GridSpace`: integer ``K`` times a
few step sizes) :func:`criterion_c_exact` evaluates every plan of it, which gives the
exact maximum for about the price of one PGD run of ``K_max`` steps per step size.

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
from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..core.attacks import AttackerStep, check_budget, pgd, pgd_iterates, start_point
from ..core.schedules import Plan
from ..infra.checks import check_int, check_pixels, check_positive, check_real, check_strict_int
from ..infra.errors import UserError
from ..infra.nn import eval_mode, param_grad, param_grad_sq_norm


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
        from hyperopt import hp  # imported when searched (about a second), not with the library
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
class GridSpace:
    """A finite space ``G`` of plans: every integer ``K`` in ``[k_lo, k_hi]`` with every step in ``alphas``.

    TPE (:func:`criterion_c`) samples ``K`` as in :class:`SearchSpace` (a uniform real
    rounded to the nearest integer) and picks ``alpha`` among ``alphas``;
    :func:`criterion_c_exact` evaluates all ``len(ks) * len(alphas)`` plans.
    """

    k_lo: int
    k_hi: int
    alphas: tuple[float, ...]

    def __post_init__(self) -> None:
        check_strict_int("k_lo", self.k_lo)
        check_strict_int("k_hi", self.k_hi)
        if self.k_hi < self.k_lo:
            raise UserError(f"k_hi must be >= k_lo={self.k_lo}, got {self.k_hi!r}")
        if not isinstance(self.alphas, tuple) or not self.alphas:
            raise UserError(f"alphas must be a non-empty tuple of step sizes, got {self.alphas!r}")
        for a in self.alphas:
            check_positive("alphas", a)

    @property
    def ks(self) -> range:
        """The step counts of the grid."""
        return range(self.k_lo, self.k_hi + 1)

    def hyperopt(self) -> dict:
        """The space in hyperopt's terms: ``K`` a rounded uniform real, ``alpha`` a choice."""
        from hyperopt import hp
        steps = self.k_lo if self.k_lo == self.k_hi else hp.quniform("steps", self.k_lo - 0.5, self.k_hi + 0.5, 1)
        return {"steps": steps, "alpha": hp.choice("alpha", list(self.alphas))}

    def plan(self, sample: dict) -> Plan:
        """The plan of a hyperopt sample, ``K`` clipped into ``[k_lo, k_hi]``."""
        steps = min(max(int(round(float(sample["steps"]))), self.k_lo), self.k_hi)
        return Plan(steps, float(sample["alpha"]))


@dataclass(frozen=True)
class CriterionResult:
    """Outcome of :func:`criterion_c` or :func:`criterion_c_exact`.

    ``c``, the best plan found and both values; ``evaluations`` counts the distinct
    plans whose value was computed (the current plan included), ``passes`` the
    forward+backward passes on the batch that took (each PGD step one, each value's
    parameter gradient one).
    """

    c: float
    best: Plan
    best_value: float
    plan_value: float
    evaluations: int
    passes: int


def _gain(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, g_ref: torch.Tensor | None) -> float:
    """The gamma-free part of ``V`` at the attack's point: ``||g||^2`` (Eq. 14), or ``<g_ref, g>`` with a reference."""
    if g_ref is None:
        return param_grad_sq_norm(model, x_adv, y)
    return float(g_ref @ param_grad(model, x_adv, y))


def _value(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, steps: int, gamma: float,
           g_ref: torch.Tensor | None = None) -> float:
    """``V`` at the attack's point: its gain (:func:`_gain`) minus ``gamma * steps``."""
    return _gain(model, x_adv, y, g_ref) - gamma * steps


def _reference_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    reference: torch.Tensor | None) -> torch.Tensor | None:
    """The parameter gradient at the reference points (in eval mode), or ``None`` without a reference."""
    if reference is None:
        return None
    if not isinstance(reference, torch.Tensor) or reference.shape != x.shape:
        raise UserError(f"reference must be a tensor of the batch's shape {tuple(x.shape)}, got "
                        f"{getattr(reference, 'shape', type(reference).__name__)}")
    check_pixels("reference", reference)
    with eval_mode(model):
        return param_grad(model, reference.detach(), y)


def plan_value(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan, *, eps: float,
               gamma: float, reference: torch.Tensor | None = None) -> float:
    """``V(alpha, K)``: squared parameter-gradient norm at PGD's point (no random start) minus ``gamma * K``.

    With ``reference`` (adversarial points of a strong attack on the same batch, e.g.
    :func:`amata_lib.study.convergence.reference_attack`) the gain is ``<g_ref, g>`` instead of
    ``||g||^2`` (see :func:`criterion_c_exact`).
    """
    if not isinstance(plan, Plan):
        raise UserError(f"plan must be a Plan, got {plan!r}")
    g_ref = _reference_grad(model, x, y, reference)
    with eval_mode(model):
        x_adv = pgd(model, x, y, eps=eps, alpha=plan.alpha, steps=plan.steps, random_start=False)
        return _value(model, x_adv, y, plan.steps, gamma, g_ref)


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
    space : SearchSpace or GridSpace
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
        A lower bound of the exact ``C`` over ``G``; on a :class:`GridSpace`,
        :func:`criterion_c_exact` gives the exact value.
    """
    from hyperopt import STATUS_OK, Trials, fmin, tpe  # see SearchSpace.hyperopt
    check_real("gamma", gamma, minimum=0)
    check_int("budget", budget)
    check_int("seed", seed, minimum=0)
    if not isinstance(space, (SearchSpace, GridSpace)):
        raise UserError(f"space must be a SearchSpace or GridSpace, got {space!r}")

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
                           evaluations=len(cache), passes=sum(p.steps + 1 for p in cache))


def grid_gains(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, ks: Iterable[int],
               alphas: Iterable[float], reference: torch.Tensor | None = None) -> tuple[dict[Plan, float], int]:
    """The gamma-free part of ``V`` for every plan of the grid ``ks x alphas``, and the passes it took.

    PGD without random start is deterministic, so the ``K``-step point is the ``K``-th
    iterate of a longer run: one run of ``max(ks)`` steps per step size yields all of
    them, for ``len(alphas) * (max(ks) + len(ks))`` passes (plus one for the
    reference's gradient) instead of ``sum(K + 1)`` over the grid. The plans come in
    ``alphas``-then-``ks`` order. Since ``V = gain - gamma * K``, one call gives ``C`` at
    every ``gamma`` (:func:`criterion_c_exact_gammas`).
    """
    ks, alphas = sorted(set(ks)), list(dict.fromkeys(alphas))
    if not ks or not alphas:
        raise UserError(f"ks and alphas must be non-empty, got ks={ks!r}, alphas={alphas!r}")
    for k in ks:
        check_strict_int("ks", k)
    for a in alphas:
        check_positive("alphas", a)
    check_budget(eps, max(alphas), max(ks), "ce")
    check_pixels("x", x)
    x, wanted = x.detach(), set(ks)
    g_ref = _reference_grad(model, x, y, reference)
    gains, passes = {}, 0 if g_ref is None else 1
    with eval_mode(model):
        for alpha in alphas:
            step = AttackerStep(eps, alpha)
            iterates = pgd_iterates(model, x, y, start_point(x, step, random_start=False), step=step, steps=ks[-1])
            for k, x_adv in enumerate(iterates, start=1):
                if k in wanted:
                    gains[Plan(k, float(alpha))] = _gain(model, x_adv, y, g_ref)
            passes += ks[-1] + len(ks)
    return gains, passes


def criterion_c_exact_gammas(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan, *, eps: float,
                             gammas: Iterable[float], ks: Iterable[int], alphas: Iterable[float],
                             reference: torch.Tensor | None = None) -> dict[float, CriterionResult]:
    """:func:`criterion_c_exact` at several ``gammas`` from one evaluation of the grid (same passes for all)."""
    if not isinstance(plan, Plan):
        raise UserError(f"plan must be a Plan, got {plan!r}")
    gammas = list(gammas)
    if not gammas:
        raise UserError("gammas must name at least one gamma")
    for g in gammas:
        check_real("gamma", g, minimum=0)
    gains, passes = grid_gains(model, x, y, eps=eps, ks=ks, alphas=alphas, reference=reference)
    current = plan_value(model, x, y, plan, eps=eps, gamma=0.0, reference=reference)
    passes += plan.steps + 1 + (0 if reference is None else 1)
    evaluations = len(set(gains) | {plan})
    out = {}
    for gamma in gammas:
        mine = current - gamma * plan.steps
        best, best_value = plan, mine  # ties keep the current plan, then the first grid plan
        for candidate, gain in gains.items():
            if gain - gamma * candidate.steps > best_value:
                best, best_value = candidate, gain - gamma * candidate.steps
        out[gamma] = CriterionResult(c=best_value - mine, best=best, best_value=best_value, plan_value=mine,
                                     evaluations=evaluations, passes=passes)
    return out


def criterion_c_exact(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan, *, eps: float,
                      gamma: float, ks: Iterable[int], alphas: Iterable[float],
                      reference: torch.Tensor | None = None) -> CriterionResult:
    """The greedy criterion C of Eq. 14 with the maximum over the grid ``G = ks x alphas`` computed exactly.

    Every plan of the grid is evaluated, with the value :func:`plan_value` gives it, in
    :func:`grid_gains`'s one PGD run per step size. Ties keep the current plan, then the
    first grid plan in ``alphas``-then-``ks`` order.

    Parameters
    ----------
    model, x, y, plan, eps, gamma
        As in :func:`criterion_c`.
    ks : iterable of int
        Step counts of the grid (each ``>= 1``).
    alphas : iterable of float
        Step sizes of the grid (each ``> 0``).
    reference : torch.Tensor, optional
        Adversarial points of a strong attack on the same batch (e.g.
        :func:`amata_lib.study.convergence.reference_attack`). Then a plan's gain is
        ``<grad_theta l(x_ref), grad_theta l(x_plan)>`` instead of ``||grad_theta l(x_plan)||^2``:
        Eq. 14 replaces the co-state by minus the plan's *own* loss gradient, so a plan
        scores by how far its update moves the parameters on the loss it defines
        itself, and a weak attack, whose loss is the near-clean loss, can score best;
        with the strong attack's gradient in the co-state's place a plan scores by how
        much its update lowers the strong-attack loss to first order. An addition of
        ours, not the paper's. The reference attack's own passes are not counted.

    Returns
    -------
    CriterionResult
        The exact ``c = max over G and the current plan - plan value >= 0``.

    Notes
    -----
    original | ours | why: the paper maximises over ``G`` with hyperopt (TPE; its
    appendix, which we do not have, gives no budget) | :func:`criterion_c` does the
    same; this function is an addition | TPE with a budget of 10-20 is only a lower
    bound; on a grid of a few hundred plans the exact maximum costs little more.
    """
    check_real("gamma", gamma, minimum=0)
    return criterion_c_exact_gammas(model, x, y, plan, eps=eps, gammas=[gamma], ks=ks, alphas=alphas,
                                    reference=reference)[gamma]
