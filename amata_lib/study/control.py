"""Annealing as optimal control: the paper's one-dimensional toy problem (Eq. 11-12), derived with sympy.

The toy loss is ``l(theta, x) = theta**2 / 2 - (x - theta)**2 / (theta**2 + 1)``;
``x`` plays the data (the adversary moves it, with no epsilon-ball) and ``theta``
the trainable parameter. Every closed form below is *derived* by sympy from that
one expression (``solve``, ``rsolve``, ``dsolve``, ``series``), so the chapter and
the tests call the same code, and a typo in the paper cannot slip in.

Symbols (module constants, use them to build expected expressions):

* ``theta``, ``x`` -- parameter and data (real);
* ``alpha``, ``K`` -- inner step size (> 0) and inner step count (integer >= 1);
* ``tau`` -- the fixed inner travel ``tau = alpha * K`` of Amata (> 0);
* ``theta0`` -- the parameter at the start of training (real);
* ``t`` -- the continuous outer time (>= 0). The paper writes ``s`` in Eq. 5-10
  and ``t`` in Eq. 12 for this same time; ``t ~ eta * (outer iteration)``;
* ``T`` -- the end of the training interval (> 0);
* ``gamma`` -- the cost weight in ``R(u) = gamma * K`` (>= 0);
* ``p`` -- the co-state of the PMP (real).

The numerical half runs the two-loop algorithm itself: ``K`` plain gradient-ascent
steps of size ``alpha`` on ``x`` from ``x = 0`` (the toy has no sign and no
projection, unlike PGD), then one gradient-descent step on ``theta`` using the
partial derivative at the inner point (the paper's footnote 3).

What the PMP does and does not give here (checked by the tests):

* with ``alpha = alpha* = 1 / |l_xx|`` the inner loop lands on the maximiser
  ``x* = theta`` in one step and stays there, so the state equation becomes the
  robust gradient flow ``theta_t = theta0 exp(-t)``, and ``K*_t = tau / alpha*``
  is Eq. 12;
* along that trajectory the co-state is ``p_t = -theta0 exp(t - 2T)``;
* the Hamiltonian ``p F - gamma K`` over integer ``K`` is maximised by
  ``ceil(K*_t)`` when the inner loop may not overshoot (``alpha <= alpha*``,
  i.e. ``K >= K*_t``), for any ``gamma >= 0`` as long as ``K*_t > 1``: past
  ``K*_t`` the inner error ``rho**K`` grows with ``K``, which shrinks ``|F|``,
  while the cost grows too. Over *all* ``K`` it is not:
  an overshooting inner loop (odd ``K < K*_t``) makes ``|d l / d theta|``
  larger in this toy and a small ``K`` is cheaper, so the unconstrained
  maximiser is usually ``K = 1``. The paper's "solve the PMP explicitly"
  therefore needs the no-overshoot restriction, which it leaves implicit.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Mapping, Sequence

import numpy as np
import sympy as sp

from ..core.schedules import FromFunction, Plan, Schedule
from ..infra.checks import check_real as _check_real
from ..infra.checks import check_strict_int
from ..infra.errors import UserError

theta, x = sp.symbols("theta x", real=True)
alpha, tau = sp.symbols("alpha tau", positive=True)
K = sp.Symbol("K", integer=True, positive=True)
theta0 = sp.Symbol("theta0", real=True)
t = sp.Symbol("t", nonnegative=True)
T = sp.Symbol("T", positive=True)
gamma = sp.Symbol("gamma", nonnegative=True)
p = sp.Symbol("p", real=True)


def _check_steps(name: str, value: object) -> int:
    check_strict_int(name, value)
    return int(value)


# ---------------------------------------------------------------- the loss (Eq. 11)

def toy_loss() -> sp.Expr:
    """The paper's Eq. 11, ``l(theta, x) = theta**2/2 - (x - theta)**2/(theta**2 + 1)``."""
    return theta**2 / 2 - (x - theta) ** 2 / (theta**2 + 1)


def toy_clean_loss() -> sp.Expr:
    """The non-robust loss: ``l(theta, 0)``, the data point left where it is."""
    return toy_loss().subs(x, 0)


def toy_clean_minima() -> list[sp.Expr]:
    """Real minimisers of the clean loss: roots of ``dl/dtheta`` with positive second derivative.

    The root ``theta = 0`` is a local maximum and is dropped; what remains is
    ``-sqrt(sqrt(2) - 1)`` and ``+sqrt(sqrt(2) - 1)``.
    """
    loss = toy_clean_loss()
    roots = sp.solve(sp.diff(loss, theta), theta)
    return sorted((r for r in roots if sp.diff(loss, theta, 2).subs(theta, r).is_positive),
                  key=lambda r: float(r))


# ---------------------------------------------------------------- the inner problem

def toy_inner_maximizer() -> sp.Expr:
    """``x*(theta)``: the root of ``dl/dx = 0``, checked to be a maximum (``l_xx < 0``)."""
    (root,) = sp.solve(sp.diff(toy_loss(), x), x)
    if not toy_inner_curvature().subs(x, root).is_negative:
        raise ArithmeticError("dl/dx = 0 is not a maximum of the toy loss")  # pragma: no cover
    return root


def toy_robust_loss() -> sp.Expr:
    """The robust loss ``max_x l(theta, x) = l(theta, x*(theta))``, which simplifies to ``theta**2/2``."""
    return sp.simplify(toy_loss().subs(x, toy_inner_maximizer()))


def toy_robust_minima() -> list[sp.Expr]:
    """Real minimisers of the robust loss (the single point ``theta = 0``)."""
    loss = toy_robust_loss()
    return [r for r in sp.solve(sp.diff(loss, theta), theta) if sp.diff(loss, theta, 2).subs(theta, r).is_positive]


def toy_inner_curvature() -> sp.Expr:
    """``l_xx = -2/(theta**2 + 1)``: constant in ``x``, steepest (``|l_xx| = 2``) at ``theta = 0``."""
    return sp.simplify(sp.diff(toy_loss(), x, 2))


def toy_curvature_slope() -> sp.Expr:
    """``d|l_xx|/dtheta = -4 theta/(theta**2 + 1)**2``.

    Negative for ``theta > 0`` (positive for ``theta < 0``): ``|l_xx|`` grows as ``theta -> 0``.
    """
    return sp.simplify(sp.diff(-toy_inner_curvature(), theta))


def toy_one_step_alpha() -> sp.Expr:
    """``alpha*``: the step size whose single ascent step from ``x = 0`` lands on ``x*``.

    Solves ``0 + a * l_x(theta, 0) = x*(theta)`` for ``a``; the answer
    ``(theta**2 + 1)/2`` equals ``1/|l_xx|`` (Newton's step on a quadratic).
    """
    a = sp.Symbol("a", positive=True)
    one_step = a * sp.diff(toy_loss(), x).subs(x, 0)
    (root,) = sp.solve(sp.Eq(one_step, toy_inner_maximizer()), a)
    return root


def toy_contraction() -> sp.Expr:
    """``rho = 1 + alpha l_xx = 1 - 2 alpha/(theta**2 + 1)``: one ascent step maps ``x - x*`` to ``rho (x - x*)``.

    ``rho`` is the slope of the ascent map ``x -> x + alpha l_x(theta, x)``
    (an affine map, as ``l`` is quadratic in ``x``). ``|rho| < 1`` is the
    stability condition ``alpha < 2 alpha*``; ``rho < 0`` means the step overshoots.
    """
    return sp.simplify(sp.diff(x + alpha * sp.diff(toy_loss(), x), x))


def toy_inner_iterate() -> sp.Expr:
    """``A_{theta, alpha, K}(0)``: the point after ``K`` ascent steps from ``x = 0``, solved by ``rsolve``.

    Equals ``theta (1 - rho**K)`` with ``rho`` from :func:`toy_contraction`.
    """
    k = sp.Symbol("k", integer=True, nonnegative=True)
    xk = sp.Function("x_k")
    recurrence = xk(k + 1) - xk(k) - alpha * sp.diff(toy_loss(), x).subs(x, xk(k))
    return sp.simplify(sp.rsolve(recurrence, xk(k), {xk(0): 0}).subs(k, K))


# ---------------------------------------------------------------- the outer flow (Eq. 5-6)

def toy_flow() -> sp.Expr:
    """``F(theta, u) = -dl/dtheta(theta, x)`` at ``x = A_{theta, alpha, K}(0)``, ``u = (alpha, K)``.

    The derivative is partial: ``x`` is held fixed while differentiating, as in
    the paper's footnote 3 (and in PGD-based training).
    """
    return -sp.diff(toy_loss(), theta).subs(x, toy_inner_iterate())


def toy_optimal_trajectory() -> sp.Expr:
    """``theta_t`` of the robust gradient flow ``dtheta/dt = -d(theta**2/2)/dtheta``, ``theta(0) = theta0``.

    ``dsolve`` gives ``theta0 exp(-t)``. It is also the state equation with
    ``alpha = alpha*``, since then ``F = -theta`` (see :func:`toy_flow`).
    """
    th = sp.Function("theta_t")
    rhs = -sp.diff(toy_robust_loss(), theta).subs(theta, th(t))
    return sp.dsolve(sp.Eq(th(t).diff(t), rhs), th(t), ics={th(0): theta0}).rhs


def toy_optimal_schedule() -> sp.Expr:
    """Eq. 12: ``K*_t = tau / alpha*(theta_t) = 2 tau/(theta0**2 exp(-2t) + 1)``.

    It is also ``tau |l_xx(theta_t)|``: the step count grows with the inner curvature.
    """
    return sp.simplify(tau / toy_one_step_alpha().subs(theta, toy_optimal_trajectory()))


def toy_schedule_taylor(order: int = 1) -> sp.Expr:
    """Taylor polynomial of :func:`toy_optimal_schedule` in ``t`` up to ``t**order`` (Eq. 12's right side for 1)."""
    order = _check_steps("order", order)
    poly = sp.series(toy_optimal_schedule(), t, 0, order + 1).removeO()
    return sp.Add(*(sp.factor(poly.coeff(t, n)) * t**n for n in range(order + 1)))


# ---------------------------------------------------------------- the PMP (Eq. 7-10)

def toy_hamiltonian() -> sp.Expr:
    """Eq. 7 for the toy: ``H = p F(theta, alpha, K) - gamma K`` in the symbols ``theta, p, alpha, K, gamma``."""
    return p * toy_flow() - gamma * K


def toy_flow_slope_at_optimum() -> sp.Expr:
    """``dF/dtheta`` at fixed ``u``, evaluated where ``alpha = alpha*(theta)``; valid for ``K > 1``.

    With ``d = x - theta = -theta e`` and the inner error ``e = rho**K``,
    ``de/dtheta = K rho**(K-1) drho/dtheta`` vanishes at ``rho = 0`` when ``K > 1``
    (written ``K = 1 + m``, ``m > 0``), so the slope is that of ``-theta``: ``-1``.
    For ``K = 1`` the inner error's derivative does not vanish (not used here).
    """
    m = sp.Symbol("m", positive=True)
    err = sp.Function("e")(theta)
    flow = -sp.diff(toy_loss(), theta).subs(x, theta * (1 - err))
    rho = toy_contraction()
    slope = sp.diff(flow, theta).subs(sp.Derivative(err, theta), (1 + m) * rho**m * sp.diff(rho, theta))
    return sp.simplify(slope.subs(err, rho ** (1 + m)).subs(alpha, toy_one_step_alpha()))


def toy_costate() -> sp.Expr:
    """Eq. 9 along the optimal trajectory: ``dp/dt = -p dF/dtheta``, ``p_T = -dPhi/dtheta(theta_T)``.

    ``Phi`` is the robust loss ``theta**2/2``. With ``dF/dtheta = -1``
    (:func:`toy_flow_slope_at_optimum`, needs ``K*_t > 1``, i.e. ``tau > (theta0**2 + 1)/2``)
    ``dsolve`` gives ``p_t = -theta0 exp(t - 2T)``.
    """
    p_t = sp.Function("p_t")
    theta_end = toy_optimal_trajectory().subs(t, T)
    terminal = -sp.diff(toy_robust_loss(), theta).subs(theta, theta_end)
    ode = sp.Eq(p_t(t).diff(t), -p_t(t) * toy_flow_slope_at_optimum())
    return sp.simplify(sp.dsolve(ode, p_t(t), ics={p_t(T): terminal}).rhs)


@lru_cache(maxsize=None)
def _numeric(name: str) -> Callable:
    """Compiled numpy versions of the derived expressions (built once)."""
    if name == "outer_grad":
        return sp.lambdify((theta, x), sp.diff(toy_loss(), theta), "numpy")
    if name == "inner_grad":
        return sp.lambdify((theta, x), sp.diff(toy_loss(), x), "numpy")
    if name == "schedule":
        return sp.lambdify((tau, theta0, t), toy_optimal_schedule(), "numpy")
    if name == "trajectory":
        return sp.lambdify((theta0, t), toy_optimal_trajectory(), "numpy")
    if name == "costate":
        return sp.lambdify((theta0, t, T), toy_costate(), "numpy")
    raise KeyError(name)  # pragma: no cover


def inner_ascent(theta_value: float, alpha_value: float, steps: int) -> float:
    """Run the inner algorithm: ``steps`` plain gradient-ascent steps of size ``alpha_value`` on ``x`` from 0."""
    theta_value = _check_real("theta_value", theta_value)
    alpha_value = _check_real("alpha_value", alpha_value, minimum=0, strict=True)
    steps = _check_steps("steps", steps)
    grad = _numeric("inner_grad")
    x_value = 0.0
    for _ in range(steps):
        x_value += alpha_value * grad(theta_value, x_value)
    return float(x_value)


def flow(theta_value: float, alpha_value: float, steps: int) -> float:
    """``F(theta, (alpha, K))``: minus the outer partial derivative at the inner algorithm's point."""
    x_value = inner_ascent(theta_value, alpha_value, steps)
    return -float(_numeric("outer_grad")(float(theta_value), x_value))


def hamiltonian_argmax(*, theta0_value: float, tau_value: float, gamma_value: float, horizon: float,
                       times: Sequence[float], k_max: int) -> dict[str, np.ndarray]:
    """Check Eq. 10 numerically along the optimal trajectory, over integer ``K`` in ``1..k_max``.

    At each time ``t`` in ``times`` the state ``theta_t`` and co-state ``p_t`` are the
    closed forms above, the control is ``u = (tau/K, K)``, and
    ``H(K) = p_t F(theta_t, u) - gamma K``.

    Returns
    -------
    dict
        NumPy arrays, one entry per time: ``t``, ``theta``, ``p``, ``k_star`` (Eq. 12, real),
        ``argmax_all`` (best ``K`` over ``1..k_max``), ``argmax_no_overshoot`` (best ``K`` among those
        with ``alpha <= alpha*``, i.e. ``K >= K*_t``; 0 if none is in the grid) and
        ``hamiltonian`` (shape ``len(times) x k_max``).
    """
    theta0_value = _check_real("theta0_value", theta0_value)
    tau_value = _check_real("tau_value", tau_value, minimum=(theta0_value**2 + 1) / 2, strict=True)
    gamma_value = _check_real("gamma_value", gamma_value, minimum=0)
    horizon = _check_real("horizon", horizon, minimum=0, strict=True)
    k_max = _check_steps("k_max", k_max)
    ts = np.asarray(times, dtype=float)
    if ts.ndim != 1 or len(ts) == 0 or np.any(ts < 0) or np.any(ts > horizon):
        raise UserError(f"times must be a non-empty 1-d sequence in [0, horizon={horizon:g}], got {times!r}")
    theta_t = _numeric("trajectory")(theta0_value, ts)
    costate = _numeric("costate")(theta0_value, ts, horizon)
    k_star = _numeric("schedule")(tau_value, theta0_value, ts)
    ks = np.arange(1, k_max + 1)
    ham = np.array([[p_value * flow(th, tau_value / k, int(k)) - gamma_value * k for k in ks]
                    for th, p_value in zip(theta_t, costate)])
    allowed = ks[None, :] >= k_star[:, None] - 1e-12
    masked = np.where(allowed, ham, -np.inf)
    no_overshoot = np.where(allowed.any(axis=1), ks[np.argmax(masked, axis=1)], 0)
    return {"t": ts, "theta": theta_t, "p": costate, "k_star": k_star, "argmax_all": ks[np.argmax(ham, axis=1)],
            "argmax_no_overshoot": no_overshoot, "hamiltonian": ham}


# ---------------------------------------------------------------- two-loop training on the toy

def schedule_from_expression(expression: sp.Expr, *, theta0_value: float, tau_value: float, eta: float,
                             iterations: int, name: str) -> Schedule:
    """A real schedule ``K(tau, theta0, t)`` (e.g. Eq. 12 or its Taylor line) as integer plans per outer iteration.

    Iteration ``i`` sits at continuous time ``t = eta * i`` (the paper's ``s ~ t eta``);
    ``K_i = round(K(tau, theta0, eta * i))`` half up, at least 1, and ``alpha_i = tau / K_i``.
    """
    extra = expression.free_symbols - {tau, theta0, t}
    if extra:
        raise UserError(f"expression may only use tau, theta0 and t, got extra symbols {sorted(map(str, extra))}")
    theta0_value = _check_real("theta0_value", theta0_value)
    tau_value = _check_real("tau_value", tau_value, minimum=0, strict=True)
    eta = _check_real("eta", eta, minimum=0, strict=True)
    iterations = _check_steps("iterations", iterations)
    k_of_t = sp.lambdify((tau, theta0, t), expression, "math")

    def plan(i: int) -> Plan:
        steps = max(1, int(math.floor(float(k_of_t(tau_value, theta0_value, eta * i)) + 0.5)))
        return Plan(steps, tau_value / steps)

    return FromFunction(plan, iterations, name=name)


def two_loop(schedule: Schedule, *, theta0_value: float, eta: float, gamma_value: float) -> dict[str, np.ndarray]:
    """Two-loop training of the toy: per outer iteration ``i``, ``K_i`` ascent steps then one descent step.

    ``schedule(i)`` gives the plan ``(K_i, alpha_i)`` (``schedule.epochs`` outer
    iterations); ``theta <- theta + eta F(theta, u_i)``.

    Returns
    -------
    dict
        NumPy arrays of length ``iterations + 1`` (index 0 = before training): ``theta``;
        ``robust_loss`` = ``theta**2/2``; ``cost`` = cumulative ``gamma * sum K``;
        ``objective`` = ``robust_loss + eta * cost``, the discretised Bolza objective (Eq. 6)
        of the run so far; ``steps`` and
        ``alpha_ratio`` (length ``iterations``): ``alpha_i / alpha*(theta_i)``, the step
        against the exact one-step size ``(theta**2 + 1) / 2`` of :func:`toy_one_step_alpha`
        at the iteration's state (1: exact; above 1 the inner loop overshoots ``x*``, above 2
        it diverges).
    """
    theta_value = _check_real("theta0_value", theta0_value)
    eta = _check_real("eta", eta, minimum=0, strict=True)
    gamma_value = _check_real("gamma_value", gamma_value, minimum=0)
    plans = schedule.plans()
    thetas = [theta_value]
    for plan in plans:
        theta_value = theta_value + eta * flow(theta_value, plan.alpha, plan.steps)
        if not math.isfinite(theta_value):
            raise UserError(f"the outer loop diverged with eta={eta:g}; use a smaller eta")
        thetas.append(theta_value)
    steps = np.array([p.steps for p in plans])
    theta_arr = np.array(thetas)
    cost = gamma_value * np.concatenate([[0], np.cumsum(steps)])
    robust = theta_arr**2 / 2
    alpha_ratio = np.array([p.alpha for p in plans]) * 2 / (theta_arr[:-1] ** 2 + 1)
    return {"theta": theta_arr, "robust_loss": robust, "cost": cost, "objective": robust + eta * cost,
            "steps": steps, "alpha_ratio": alpha_ratio}


def tradeoff(schedules: Mapping[str, Schedule], *, theta0_value: float, eta: float,
             gamma_value: float) -> list[dict]:
    """Final cost and robust loss of each named schedule: the points of a cost/robustness trade-off plot.

    Returns one row per schedule: ``name``, ``cost`` (``gamma * sum K``),
    ``robust_loss`` (final ``theta**2/2``), ``objective`` (see :func:`two_loop`).
    """
    if not schedules:
        raise UserError("schedules must name at least one schedule, got an empty mapping")
    rows = []
    for name, schedule in schedules.items():
        run = two_loop(schedule, theta0_value=theta0_value, eta=eta, gamma_value=gamma_value)
        rows.append({"name": name, "cost": float(run["cost"][-1]), "robust_loss": float(run["robust_loss"][-1]),
                     "objective": float(run["objective"][-1])})
    return rows


def optimal_shape_schedule(*, k_min: int, k_max: int, tau: float, epochs: int, horizon: float = 3.0) -> Schedule:
    """Eq. 12's PMP-optimal shape ``K*_t`` rescaled to run from ``k_min`` to (almost) ``k_max`` in ``epochs``.

    The toy's ``K*_t = 2 tau' / (theta0**2 exp(-2 t) + 1)`` goes from ``2 tau' / (theta0**2 + 1)``
    at ``t = 0`` towards ``2 tau'``. Choosing ``2 tau' = k_max`` and ``theta0**2 = k_max / k_min - 1``
    makes it start at ``k_min`` and approach ``k_max``; epoch ``e`` of ``epochs`` is mapped to toy
    time ``t = horizon * e / epochs`` (``horizon = 3`` brings it within 2 % of ``k_max`` by the last epoch).
    ``K_t`` is rounded half up (as :class:`~amata_lib.core.schedules.Amata`) and ``alpha_t = tau / K_t``.
    """
    k_min_i, k_max_i = _check_steps("k_min", k_min), _check_steps("k_max", k_max)
    if k_min_i > k_max_i:
        raise UserError(f"k_min must be <= k_max, got k_min={k_min!r} > k_max={k_max!r}")
    tau_f = _check_real("tau", tau, minimum=0, strict=True)
    horizon_f = _check_real("horizon", horizon, minimum=0, strict=True)
    epochs_i = _check_steps("epochs", epochs)
    k_star = _numeric("schedule")
    theta0_value = math.sqrt(k_max_i / k_min_i - 1)

    def plan(e: int) -> Plan:
        steps = math.floor(float(k_star(k_max_i / 2, theta0_value, horizon_f * e / epochs_i)) + 0.5)
        steps = min(max(steps, k_min_i), k_max_i)
        return Plan(steps, tau_f / steps)

    return FromFunction(plan, epochs_i, name=f"pmp-optimal shape {k_min_i}->{k_max_i}")
