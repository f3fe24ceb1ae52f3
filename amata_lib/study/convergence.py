"""Tools for the convergence chapter: the two terms of Theorem 1, an exactly solvable toy, and
measurements of the inner maximizer's error delta on a real model.

Theorem 1 of the paper bounds the average squared gradient of the robust loss,
``(1/T) sum_t E ||grad L(theta_t)||^2 <= 4 sigma sqrt(beta Delta / T) + 5 L_theta_x^2 delta^2``,
where ``delta`` is how far the inner maximizer's output is from the true maximizer.

* :func:`optimization_term`, :func:`inexactness_term`: the two terms;
* :class:`ConcaveToy`, :func:`make_toy`, :func:`run_two_loop`: a problem that satisfies
  the assumptions, whose maximizer is known in closed form, so ``delta`` is exact;
* :func:`reference_attack`, :func:`measure_inner`, :func:`measure_plans`: on a neural network, where the true
  maximizer is unknown, a strong many-step PGD stands in for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.attacks import attack_loss, pgd
from ..core.schedules import Plan, Schedule, step_for
from ..infra.checks import check_strict_int
from ..infra.errors import UserError
from ..infra.nn import eval_mode, param_grad, param_grad_sq_norm


def optimization_term(sigma: float, beta: float, gap: float, iterations: int) -> float:
    """First term of Theorem 1, ``4 sigma sqrt(beta Delta / T)``: vanishes as T grows."""
    for name, value in (("sigma", sigma), ("beta", beta), ("gap", gap)):
        if not math.isfinite(value) or value < 0:
            raise UserError(f"{name} must be a finite number >= 0, got {value!r}")
    check_strict_int("iterations", iterations)
    return 4 * sigma * math.sqrt(beta * gap / iterations)


def inexactness_term(l_theta_x: float, delta: float) -> float:
    """Second term of Theorem 1, ``5 L_theta_x^2 delta^2``: a floor that does not depend on T."""
    for name, value in (("l_theta_x", l_theta_x), ("delta", delta)):
        if not math.isfinite(value) or value < 0:
            raise UserError(f"{name} must be a finite number >= 0, got {value!r}")
    return 5 * l_theta_x ** 2 * delta ** 2


@dataclass(frozen=True)
class ConcaveToy:
    """``l_i(theta, x) = (lam/2)||theta||^2 - y_i theta.x - (mu/2)||x - x0_i||^2`` on ``||x - x0_i||_inf <= eps``.

    A linear classifier's (unbounded) margin loss, made ``mu``-strongly concave in ``x``
    by a quadratic penalty on the perturbation, with labels ``y_i`` in {-1, +1}. The
    constants of the paper's Assumptions 1-2 are exact: ``L_theta_theta = lam``,
    ``L_theta_x = L_x_theta = 1``, so ``beta = 1/mu + lam``. The maximizer is separable
    per coordinate: ``x*_i = x0_i + clip(-y_i theta / mu, -eps, eps)``.
    """

    x0: np.ndarray
    y: np.ndarray
    lam: float
    mu: float
    eps: float

    @property
    def beta(self) -> float:
        """Smoothness constant of the robust loss, ``L_theta_x L_x_theta / mu + L_theta_theta``."""
        return 1 / self.mu + self.lam

    def maximizer(self, theta: np.ndarray, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Exact inner maximizer ``x*_i(theta)`` for the examples ``idx``."""
        y = self.y[idx][:, None]
        return self.x0[idx] + np.clip(-y * theta / self.mu, -self.eps, self.eps)

    def pgd(self, theta: np.ndarray, idx: np.ndarray | slice, plan: Plan) -> np.ndarray:
        """Algorithm 1's inner loop: ``plan.steps`` signed ascent steps of size ``plan.alpha`` from ``x0``."""
        y = self.y[idx][:, None]
        d = np.zeros_like(self.x0[idx])
        for _ in range(plan.steps):
            d = np.clip(d + plan.alpha * np.sign(-y * theta - self.mu * d), -self.eps, self.eps)
        return self.x0[idx] + d

    def grad_theta(self, theta: np.ndarray, x: np.ndarray, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Mean over the examples ``idx`` of ``grad_theta l_i(theta, x_i)``."""
        return self.lam * theta - (self.y[idx][:, None] * x).mean(0)

    def robust_loss(self, theta: np.ndarray) -> float:
        """``L(theta)``: mean loss at the exact maximizers."""
        x = self.maximizer(theta)
        margin = self.y * (x @ theta)
        return float(np.mean(0.5 * self.lam * theta @ theta - margin
                             - 0.5 * self.mu * ((x - self.x0) ** 2).sum(1)))

    def robust_grad(self, theta: np.ndarray) -> np.ndarray:
        """``grad L(theta)`` (Danskin: the gradient at the maximizer)."""
        return self.grad_theta(theta, self.maximizer(theta))

    def sigma(self, batch_size: int) -> float:
        """Exact standard deviation of a minibatch gradient drawn without replacement.

        ``y_i x*_i = y_i x0_i + clip(-theta/mu, -eps, eps)``: the second part is the same for
        every example, so the variance does not depend on ``theta``.
        """
        n = len(self.y)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
            raise UserError(f"batch_size must be an integer in [1, {n}], got {batch_size!r}")
        z = self.y[:, None] * self.x0
        per_example = ((z - z.mean(0)) ** 2).sum(1).mean()
        return math.sqrt(per_example / batch_size * (n - batch_size) / max(n - 1, 1))

    def optimality_gap(self, theta0: np.ndarray, iterations: int = 2000) -> float:
        """``Delta = L(theta0) - min L``, the minimum found by gradient descent with step ``1/beta``."""
        theta = theta0.copy()
        for _ in range(iterations):
            theta = theta - self.robust_grad(theta) / self.beta
        return self.robust_loss(theta0) - self.robust_loss(theta)


def make_toy(n: int = 512, dim: int = 20, *, lam: float = 0.1, mu: float = 1.0, eps: float = 0.1,
             seed: int = 0) -> ConcaveToy:
    """Two Gaussian classes ``x0 ~ N(y m, I)`` with a random unit-scale mean ``m``; labels +-1."""
    check_strict_int("n", n, minimum=2)
    for name, value in (("lam", lam), ("mu", mu), ("eps", eps)):
        if not math.isfinite(value) or value <= 0:
            raise UserError(f"{name} must be a finite number > 0, got {value!r}")
    rng = np.random.default_rng(seed)
    y = rng.choice([-1.0, 1.0], size=n)
    m = rng.normal(size=dim) / math.sqrt(dim)
    x0 = y[:, None] * m + rng.normal(size=(n, dim))
    return ConcaveToy(x0=x0, y=y, lam=lam, mu=mu, eps=eps)


def run_two_loop(toy: ConcaveToy, schedule: Schedule, *, lr: float, batch_size: int = 32,
                 theta0: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """SGD on the toy with the inner loop of Algorithm 1 planned by ``schedule`` (an epoch = full minibatches).

    Returns per-iteration arrays: ``grad_sq`` = ``||grad L(theta_t)||^2`` before the step,
    ``delta`` = the largest ``||x_adv - x*||_2`` in the minibatch, ``steps`` = K_t.
    """
    if not math.isfinite(lr) or lr <= 0:
        raise UserError(f"lr must be a finite number > 0, got {lr!r}")
    rng = np.random.default_rng(seed)
    theta = np.zeros(toy.x0.shape[1]) if theta0 is None else np.array(theta0, dtype=float)
    n = len(toy.y)
    grad_sq, delta, steps = [], [], []
    for t in range(schedule.epochs):
        plan = schedule(t)
        order = rng.permutation(n)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = order[i:i + batch_size]
            x_adv = toy.pgd(theta, idx, plan)
            grad_sq.append(float(np.sum(toy.robust_grad(theta) ** 2)))
            delta.append(float(np.linalg.norm(x_adv - toy.maximizer(theta, idx), axis=1).max()))
            steps.append(plan.steps)
            theta = theta - lr * toy.grad_theta(theta, x_adv, idx)
    return {"grad_sq": np.array(grad_sq), "delta": np.array(delta), "steps": np.array(steps)}


def reference_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 100,
                     alpha: float | None = None, restarts: int = 2) -> torch.Tensor:
    """Stand-in for the unknown maximizer: the highest-loss point of ``restarts`` long PGD runs.

    The first run starts at the clean input (like Algorithm 1's inner loop), the others
    at uniform random points of the ball. The step size defaults to ``2.5 * eps / steps``
    (Madry et al.): many small steps. The caller sets the random state and the model's mode.
    """
    check_strict_int("restarts", restarts)
    alpha = step_for(eps, steps) if alpha is None else alpha
    best, best_loss = x.detach().clone(), torch.full((len(y),), -math.inf, device=x.device)
    for r in range(restarts):
        x_adv = pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=r > 0)
        with torch.no_grad():
            loss = attack_loss(model(x_adv), y)
        better = loss > best_loss
        best[better], best_loss[better] = x_adv[better], loss[better]
    return best


def measure_inner(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, plan: Plan,
                  ref_steps: int = 100, restarts: int = 2, seed: int = 0) -> dict[str, float]:
    """How well the plan's PGD (from the clean input) solves the inner problem, against :func:`reference_attack`.

    Returns ``grad_sq`` (``||grad L||^2`` at the reference points), ``delta`` (mean over
    examples of ``||x_plan - x_ref||_2``), ``delta_max``, ``loss_gap`` (mean
    reference loss minus mean plan loss; > 0 when the reference attack is stronger),
    ``grad_err`` (the error ``||e|| = ||grad L(x_plan) - grad L(x_ref)||`` that the plan's
    points put into the outer step: the ``e_t`` of Theorem 1's one-step argument) and
    ``grad_err_rel`` (``||e|| / ||grad L(x_ref)||``). ``L`` is the batch-mean cross-entropy.
    Runs in eval mode with its own seeded random stream, so calling it from a
    training callback does not change the training run.
    """
    return measure_plans(model, x, y, eps=eps, plans={"plan": plan}, ref_steps=ref_steps, restarts=restarts,
                         seed=seed)["plan"]


def measure_plans(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, plans: dict[str, Plan],
                  ref_steps: int = 100, restarts: int = 2, seed: int = 0) -> dict[str, dict[str, float]]:
    """:func:`measure_inner` for several plans against one reference attack: ``{name: measures}``.

    The reference (the expensive part: ``restarts`` runs of ``ref_steps`` steps) is computed once;
    each plan's measures are those :func:`measure_inner` gives it alone.
    """
    with eval_mode(model):
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed)
            x_ref = reference_attack(model, x, y, eps=eps, steps=ref_steps, restarts=restarts)
            x_plans = {name: pgd(model, x, y, eps=eps, alpha=plan.alpha, steps=plan.steps, random_start=False)
                       for name, plan in plans.items()}
        g_ref = param_grad(model, x_ref, y)
        norm, grad_sq = float(g_ref.norm()), param_grad_sq_norm(model, x_ref, y)
        with torch.no_grad():
            ref_loss = attack_loss(model(x_ref), y).mean()
        out = {}
        for name, x_plan in x_plans.items():
            dist = (x_plan - x_ref).flatten(1).norm(dim=1)
            with torch.no_grad():
                gap = ref_loss - attack_loss(model(x_plan), y).mean()
            err = float((param_grad(model, x_plan, y) - g_ref).norm())
            out[name] = {"grad_sq": grad_sq, "delta": float(dist.mean()), "delta_max": float(dist.max()),
                         "loss_gap": float(gap), "grad_err": err, "grad_err_rel": err / norm if norm > 0 else 0.0}
        return out
