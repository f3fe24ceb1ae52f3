import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from amata_lib import Amata, Constant, Plan, pgd
from amata_lib.infra.nn import param_grad_sq_norm as robust_grad_norm_sq
from amata_lib.study.convergence import (
    inexactness_term,
    make_toy,
    measure_inner,
    optimization_term,
    reference_attack,
    run_two_loop,
)


def test_bound_terms():
    assert optimization_term(0.5, 2.0, 8.0, 16) == pytest.approx(4 * 0.5 * math.sqrt(1.0))
    assert optimization_term(0.5, 2.0, 8.0, 64) == pytest.approx(optimization_term(0.5, 2.0, 8.0, 16) / 2)
    assert inexactness_term(2.0, 0.1) == pytest.approx(5 * 4 * 0.01)
    for bad in ({"sigma": -1.0}, {"gap": float("nan")}, {"iterations": 0}):
        kwargs = {"sigma": 0.5, "beta": 2.0, "gap": 8.0, "iterations": 16, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            optimization_term(**kwargs)
    with pytest.raises(ValueError, match="delta"):
        inexactness_term(1.0, -0.1)


@pytest.fixture(scope="module")
def toy():
    return make_toy(n=64, dim=5, seed=1)


def test_toy_maximizer_beats_every_feasible_point(toy):
    rng = np.random.default_rng(0)
    theta = rng.normal(size=5)
    x_star = toy.maximizer(theta)
    assert np.all(np.abs(x_star - toy.x0) <= toy.eps + 1e-12)

    def loss(x):
        return toy.y * (x @ theta) * -1 - 0.5 * toy.mu * ((x - toy.x0) ** 2).sum(1)

    for _ in range(50):
        x = toy.x0 + rng.uniform(-toy.eps, toy.eps, size=toy.x0.shape)
        assert np.all(loss(x) <= loss(x_star) + 1e-12)


def test_toy_robust_grad_matches_finite_differences(toy):
    theta = np.random.default_rng(2).normal(size=5)
    h = 1e-6
    fd = [(toy.robust_loss(theta + h * e) - toy.robust_loss(theta - h * e)) / (2 * h) for e in np.eye(5)]
    assert np.allclose(toy.robust_grad(theta), fd, atol=1e-6)
    assert toy.beta == pytest.approx(1 / toy.mu + toy.lam)


def test_toy_pgd_error_shrinks_with_more_smaller_steps(toy):
    theta = 0.05 * np.random.default_rng(3).normal(size=5)  # maximizer inside the ball
    idx = np.arange(64)
    err = {k: np.abs(toy.pgd(theta, idx, Plan(k, 0.25 / k)) - toy.maximizer(theta, idx)).max() for k in (2, 10, 100)}
    assert err[100] <= 0.25 / 100 + 1e-12
    assert err[2] > err[10] > err[100]


def test_toy_sigma_matches_sampling(toy):
    rng = np.random.default_rng(4)
    theta = rng.normal(size=5)
    full = toy.robust_grad(theta)
    sq = []
    for _ in range(4000):
        idx = rng.choice(64, size=8, replace=False)
        sq.append(np.sum((toy.grad_theta(theta, toy.maximizer(theta, idx), idx) - full) ** 2))
    assert math.sqrt(np.mean(sq)) == pytest.approx(toy.sigma(8), rel=0.05)
    with pytest.raises(ValueError, match="batch_size"):
        toy.sigma(65)


def test_two_loop_fine_inner_loop_converges_closer_and_satisfies_theorem_1():
    toy = make_toy(n=512, dim=20, seed=0)
    theta0 = np.random.default_rng(1).normal(size=20)
    epochs, batch = 30, 32
    per_epoch = 512 // batch
    iterations = epochs * per_epoch
    gap, sigma = toy.optimality_gap(theta0), toy.sigma(batch)
    lr = min(1 / toy.beta, math.sqrt(gap / (iterations * toy.beta * sigma ** 2)))
    tau = 2.5 * toy.eps
    coarse = run_two_loop(toy, Constant(2, tau / 2, epochs), lr=lr, batch_size=batch, theta0=theta0)
    fine = run_two_loop(toy, Constant(10, tau / 10, epochs), lr=lr, batch_size=batch, theta0=theta0)
    amata = run_two_loop(toy, Amata(2, 10, tau, epochs), lr=lr, batch_size=batch, theta0=theta0)
    assert len(fine["grad_sq"]) == iterations and list(amata["steps"][[0, -1]]) == [2, 10]
    assert fine["delta"].mean() < 0.5 * coarse["delta"].mean()
    late = slice(-5 * per_epoch, None)
    assert fine["grad_sq"][late].mean() < 0.5 * coarse["grad_sq"][late].mean()
    assert amata["grad_sq"][late].mean() < 0.5 * coarse["grad_sq"][late].mean()
    assert amata["delta"][late].mean() < 0.5 * coarse["delta"][late].mean()
    for run in (coarse, fine, amata):
        bound = optimization_term(sigma, toy.beta, gap, iterations) + inexactness_term(1.0, run["delta"].max())
        assert run["grad_sq"].mean() <= bound


def test_reference_attack_stays_in_ball_and_one_clean_run_is_pgd(pgd_model, digits):
    model, _ = pgd_model
    x, y = digits[1].tensors[0][:64], digits[1].tensors[1][:64]
    ref = reference_attack(model, x, y, eps=0.2, steps=20, restarts=3)
    assert (ref - x).abs().max() <= 0.2 + 1e-6 and ref.min() >= 0 and ref.max() <= 1
    one = reference_attack(model, x, y, eps=0.2, steps=20, restarts=1)
    assert torch.equal(one, pgd(model, x, y, eps=0.2, alpha=0.025, steps=20, random_start=False))
    with pytest.raises(ValueError, match="restarts"):
        reference_attack(model, x, y, eps=0.2, restarts=0)


def test_measure_inner(pgd_model, digits):
    model, _ = pgd_model
    model.train()
    x, y = digits[0].tensors[0][:64], digits[0].tensors[1][:64]
    state, grads = torch.get_rng_state(), [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    same = measure_inner(model, x, y, eps=0.2, plan=Plan(30, 0.5 / 30), ref_steps=30, restarts=1)
    assert torch.equal(torch.get_rng_state(), state) and model.training
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert same["delta"] == 0 and same["loss_gap"] == 0
    coarse = measure_inner(model, x, y, eps=0.2, plan=Plan(1, 0.5), ref_steps=30)
    assert coarse["delta"] > 0 and coarse["loss_gap"] > 0 and coarse["delta_max"] >= coarse["delta"]
    model.eval()
    ref = reference_attack(model, x, y, eps=0.2, steps=30, alpha=0.5 / 30, restarts=1)
    model.train()
    assert same["grad_sq"] == pytest.approx(robust_grad_norm_sq(model, ref, y))
    assert same["grad_err"] == 0 and same["grad_err_rel"] == 0  # the plan is the reference
    # the gradient error of the coarse plan, by hand: ||grad(x_1) - grad(x_ref)|| of the batch-mean loss
    model.eval()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ref2 = reference_attack(model, x, y, eps=0.2, steps=30)
    x_1 = pgd(model, x, y, eps=0.2, alpha=0.5, steps=1, random_start=False)
    params = [p for p in model.parameters() if p.requires_grad]
    g = [torch.cat([t.flatten() for t in torch.autograd.grad(F.cross_entropy(model(z), y), params)])
         for z in (x_1, ref2)]
    model.train()
    assert coarse["grad_err"] == pytest.approx(float((g[0] - g[1]).norm()), rel=1e-5)
    assert coarse["grad_err_rel"] == pytest.approx(coarse["grad_err"] / float(g[1].norm()), rel=1e-5)
    assert coarse["grad_err"] > 0
