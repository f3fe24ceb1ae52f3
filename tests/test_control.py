"""The toy optimal-control problem (Eq. 11-12): each derived expression against its known closed form."""
import math

import numpy as np
import pytest
import sympy as sp

from amata_lib import Amata, Constant, FromFunction, Plan
from amata_lib.study import control as c


def same(expr, expected):
    return sp.simplify(expr - expected) == 0


def test_clean_loss_has_two_minima_off_zero():
    assert same(c.toy_clean_loss(), c.theta**2 / 2 + 1 / (c.theta**2 + 1) - 1)
    minima = c.toy_clean_minima()
    root = sp.sqrt(sp.sqrt(2) - 1)
    assert len(minima) == 2
    assert same(minima[0], -root) and same(minima[1], root)


def test_robust_loss_is_half_theta_squared_with_unique_minimum():
    assert same(c.toy_inner_maximizer(), c.theta)
    assert same(c.toy_robust_loss(), c.theta**2 / 2)
    assert c.toy_robust_minima() == [0]


def test_inner_curvature_steepens_towards_zero():
    curv = c.toy_inner_curvature()
    assert same(curv, -2 / (c.theta**2 + 1))
    assert same(c.toy_curvature_slope(), -4 * c.theta / (c.theta**2 + 1) ** 2)
    values = [float(-curv.subs(c.theta, v)) for v in (2.0, 1.0, 0.5, 0.0)]
    assert values == sorted(values) and values[-1] == 2.0


def test_one_step_alpha_is_inverse_curvature():
    a_star = c.toy_one_step_alpha()
    assert same(a_star, (c.theta**2 + 1) / 2)
    assert same(a_star, 1 / -c.toy_inner_curvature())


def test_inner_iterate_closed_form_matches_the_algorithm():
    closed = c.toy_inner_iterate()
    rho = c.toy_contraction()
    assert same(rho, 1 - 2 * c.alpha / (c.theta**2 + 1))
    assert same(closed.subs(c.K, 4), (c.theta * (1 - rho**4)).subs(c.K, 4))
    for th, a, k in [(0.7, 0.3, 4), (-1.5, 2.0, 3), (0.1, 0.9, 1)]:
        expected = float(closed.subs({c.theta: th, c.alpha: a, c.K: k}))
        assert c.inner_ascent(th, a, k) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_flow_with_optimal_step_is_the_robust_gradient_flow():
    a_star = c.toy_one_step_alpha()
    assert same(c.toy_flow().subs(c.alpha, a_star), -c.theta)
    for th in (2.0, 0.3, -0.8):
        for k in (1, 3, 7):
            assert c.flow(th, (th**2 + 1) / 2, k) == pytest.approx(-th, abs=1e-12)
    # an inexact inner loop changes the flow: undershoot slows it, odd-K overshoot speeds it up
    assert abs(c.flow(1.0, 0.2, 2)) < 1.0 < abs(c.flow(1.0, 3.0, 1))


def test_trajectory_and_optimal_schedule_eq12():
    assert same(c.toy_optimal_trajectory(), c.theta0 * sp.exp(-c.t))
    k_star = c.toy_optimal_schedule()
    assert same(k_star, 2 * c.tau / (c.theta0**2 * sp.exp(-2 * c.t) + 1))
    curvature_on_path = -c.toy_inner_curvature().subs(c.theta, c.toy_optimal_trajectory())
    assert same(k_star, c.tau * curvature_on_path)
    paper = 2 * c.tau / (c.theta0**2 + 1) + 4 * c.theta0**2 * c.tau / (c.theta0**2 + 1) ** 2 * c.t
    assert same(c.toy_schedule_taylor(1), paper)
    point = {c.tau: 5, c.theta0: 2, c.t: 0.01}
    exact = float(k_star.subs(point))
    assert abs(float(c.toy_schedule_taylor(2).subs(point)) - exact) < 1e-5
    assert abs(float(paper.subs(point)) - exact) < 1e-3
    with pytest.raises(ValueError, match="order"):
        c.toy_schedule_taylor(0)


def test_costate_solves_eq9():
    assert c.toy_flow_slope_at_optimum() == -1
    p_t = c.toy_costate()
    assert same(p_t, -c.theta0 * sp.exp(c.t - 2 * c.T))
    assert same(sp.diff(p_t, c.t), p_t)  # dp/dt = -p dF/dtheta = p
    assert same(p_t.subs(c.t, c.T), -c.toy_optimal_trajectory().subs(c.t, c.T))
    # finite-difference check of dF/dtheta = -1 at fixed u = (alpha*(0.5), K=3)
    a_fixed, h = (0.5**2 + 1) / 2, 1e-5
    slope = (c.flow(0.5 + h, a_fixed, 3) - c.flow(0.5 - h, a_fixed, 3)) / (2 * h)
    assert slope == pytest.approx(-1.0, abs=1e-6)


def test_hamiltonian_maximiser_is_ceil_kstar_without_overshoot():
    times = [0.0, 0.5, 1.0, 2.0, 3.0]
    for gamma in (0.0, 0.01):
        out = c.hamiltonian_argmax(theta0_value=2.0, tau_value=5.0, gamma_value=gamma, horizon=3.0,
                                   times=times, k_max=12)
        assert np.array_equal(out["argmax_no_overshoot"], np.ceil(out["k_star"] - 1e-12).astype(int))
        assert out["hamiltonian"].shape == (len(times), 12)
    assert out["argmax_all"][0] == 1  # over all K the cheap, overshooting K = 1 wins
    ham = c.toy_hamiltonian().subs({c.theta: out["theta"][1], c.p: out["p"][1], c.alpha: 5.0 / 4,
                                    c.K: 4, c.gamma: 0.01})
    assert float(ham) == pytest.approx(out["hamiltonian"][1, 3], rel=1e-9)
    with pytest.raises(ValueError, match="tau_value"):
        c.hamiltonian_argmax(theta0_value=2.0, tau_value=2.0, gamma_value=0.0, horizon=3.0, times=[0.0], k_max=4)
    with pytest.raises(ValueError, match="times"):
        c.hamiltonian_argmax(theta0_value=2.0, tau_value=5.0, gamma_value=0.0, horizon=3.0, times=[4.0], k_max=4)


def test_two_loop_with_exact_inner_steps_is_gradient_descent():
    theta0, eta, n = 1.5, 0.1, 20
    path = [theta0 * (1 - eta) ** i for i in range(n + 1)]
    exact = FromFunction(lambda i: Plan(1, (path[i] ** 2 + 1) / 2), n)
    run = c.two_loop(exact, theta0_value=theta0, eta=eta, gamma_value=0.5)
    np.testing.assert_allclose(run["theta"], path, rtol=1e-12)
    assert run["cost"][-1] == pytest.approx(0.5 * n)
    np.testing.assert_allclose(run["objective"], run["robust_loss"] + eta * run["cost"])


def test_schedules_on_the_toy():
    tau, theta0, eta, n = 5.0, 2.0, 0.05, 60
    k_star = c.schedule_from_expression(c.toy_optimal_schedule(), theta0_value=theta0, tau_value=tau,
                                        eta=eta, iterations=n, name="K*")
    steps = [p.steps for p in k_star.plans()]
    assert steps[0] == 2 and steps == sorted(steps) and steps[-1] == 10
    rows = c.tradeoff({"K*": k_star, "Amata": Amata(2, 10, tau, n), "PGD-10": Constant(10, tau / 10, n),
                       "PGD-2": Constant(2, tau / 2, n)}, theta0_value=theta0, eta=eta, gamma_value=0.04)
    by_name = {r["name"]: r for r in rows}
    flow_end = (theta0 * (1 - eta) ** n) ** 2 / 2  # exact inner loop: gradient descent on theta**2/2
    for name in ("K*", "Amata", "PGD-10"):
        assert by_name[name]["robust_loss"] == pytest.approx(flow_end, rel=0.1)
    assert by_name["PGD-2"]["robust_loss"] > 5 * flow_end  # unstable inner loop near theta = 0: training stalls
    assert by_name["Amata"]["cost"] < by_name["K*"]["cost"] < by_name["PGD-10"]["cost"] == pytest.approx(0.04 * 600)
    with pytest.raises(ValueError, match="extra symbols"):
        c.schedule_from_expression(c.theta * c.t, theta0_value=1.0, tau_value=1.0, eta=0.1, iterations=3, name="x")


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="steps"):
        c.inner_ascent(0.5, 0.1, 0)
    with pytest.raises(ValueError, match="alpha_value"):
        c.inner_ascent(0.5, -0.1, 2)
    with pytest.raises(ValueError, match="eta"):
        c.two_loop(Constant(2, 1.0, 3), theta0_value=1.0, eta=0.0, gamma_value=0.1)
    with pytest.raises(ValueError, match="schedules"):
        c.tradeoff({}, theta0_value=1.0, eta=0.1, gamma_value=0.1)


def test_optimal_shape_schedule_follows_eq12():
    from amata_lib.study.control import optimal_shape_schedule
    s = optimal_shape_schedule(k_min=2, k_max=10, tau=0.5, epochs=30)
    ks = [p.steps for p in s.plans()]
    assert ks[0] == 2 and ks == sorted(ks) and ks[-1] == 10
    for e in (0, 7, 29):  # K = k_max / ((k_max/k_min - 1) exp(-2 t) + 1), t = 3 e / T
        k_real = 10 / (4 * math.exp(-2 * 3 * e / 30) + 1)
        assert s(e).steps == math.floor(k_real + 0.5)
        assert s(e).alpha == pytest.approx(0.5 / s(e).steps)
    with pytest.raises(ValueError, match="k_min"):
        optimal_shape_schedule(k_min=5, k_max=2, tau=1.0, epochs=3)


def test_explorer_offers_optimal_shape():
    from amata_lib.book.explorer import SHAPES
    assert "optimal" in SHAPES


def test_two_loop_alpha_ratio_is_the_step_against_the_exact_one():
    """alpha_i / alpha*(theta_i) with alpha* = (theta^2 + 1) / 2: 1 for K = tau * |l_xx| at the start,
    below 1 for more steps, and Amata (whose K_t lags K*_t) overshoots on most iterations."""
    two_loop = c.two_loop
    ten = two_loop(Constant(10, 0.5, 60), theta0_value=2.0, eta=0.05, gamma_value=0.04)
    assert ten["alpha_ratio"][0] == pytest.approx(0.5 / 2.5) and (ten["alpha_ratio"] < 1).all()
    assert len(ten["alpha_ratio"]) == 60
    two = two_loop(Constant(2, 2.5, 60), theta0_value=2.0, eta=0.05, gamma_value=0.04)
    assert two["alpha_ratio"][0] == pytest.approx(1.0) and two["alpha_ratio"][-1] > 2  # diverges late
    theta = two["theta"][30]
    assert two["alpha_ratio"][30] == pytest.approx(2.5 / ((theta ** 2 + 1) / 2))
    amata = two_loop(Amata(2, 10, 5.0, 60), theta0_value=2.0, eta=0.05, gamma_value=0.04)
    assert (amata["alpha_ratio"] > 1).sum() == 54 and amata["robust_loss"][-1] < (2.0 * 0.95 ** 60) ** 2 / 2
