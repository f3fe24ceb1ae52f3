import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from amata_lib import Constant, DigitsCNN, TrainOptions, fgsm, pgd, train
from amata_lib.core.attacks import input_grad
from amata_lib.study.landscape import (
    Plane,
    directional_curvature,
    loss_grid,
    models_at,
    off_plane_fraction,
    pgd_trajectory,
    plane,
    project_onto_plane,
    snapshot_callback,
    steepness,
    summarize,
)

EPS = 0.2


@pytest.fixture
def one(digits):
    x, y = digits[1].tensors
    return x[3:4], y[3:4]


@pytest.fixture
def batch(digits):
    x, y = digits[1].tensors
    return x[:32], y[:32]


def test_plane_axes_orthogonal_equal_length_and_u_is_the_fgsm_step(erm_model, one):
    model, _ = erm_model
    x, y = one
    p = plane(model, x, y, EPS, seed=1)
    u, v = p.u.flatten().double(), p.v.flatten().double()
    assert abs(float(u @ v)) < 1e-6 * float(u.norm() * v.norm())
    assert float(v.norm()) == pytest.approx(float(u.norm()), rel=1e-5)
    basis = p.basis().double()
    gram = (basis / basis.norm(dim=0)).T @ (basis / basis.norm(dim=0))
    assert torch.allclose(gram, torch.eye(2, dtype=torch.float64), atol=1e-6)
    # u is eps * sign(g) wherever that step stays inside [0, 1], and never larger than eps
    g = input_grad(model, x, y, "ce")
    inside = ((x + EPS * g.sign()) >= 0) & ((x + EPS * g.sign()) <= 1)
    assert inside.any() and (~inside).any()  # digits have saturated pixels: both cases are exercised
    assert torch.allclose(p.u[inside], EPS * g.sign()[inside])
    assert p.u.abs().max() <= EPS + 1e-6
    assert torch.equal(x + p.u, fgsm(model, x, y, eps=EPS))


def test_plane_seed_changes_only_v(erm_model, one):
    model, _ = erm_model
    a, b = plane(model, *one, EPS, seed=0), plane(model, *one, EPS, seed=1)
    assert torch.equal(a.u, b.u) and not torch.allclose(a.v, b.v)


def test_plane_rejects_bad_input(erm_model, one, batch):
    model, _ = erm_model
    with pytest.raises(ValueError, match="eps"):
        plane(model, *one, eps=0.0)
    with pytest.raises(ValueError, match="x must hold one input"):
        plane(model, *batch, eps=EPS)


def test_projection_recovers_plane_coordinates(erm_model, one):
    model, _ = erm_model
    x, y = one
    p = plane(model, x, y, EPS, seed=2)
    pts = torch.cat([x + 0.3 * p.u - 0.5 * p.v, x - 0.8 * p.u + 0.1 * p.v, x])
    coords = project_onto_plane(pts, x, p)
    assert torch.allclose(coords, torch.tensor([[0.3, -0.5], [-0.8, 0.1], [0.0, 0.0]]), atol=1e-5)
    assert off_plane_fraction(pts[:2], x, p).max() < 1e-4
    off = x + torch.randn_like(x)
    assert off_plane_fraction(off, x, p) > 0.5


def test_loss_grid_shape_and_fgsm_corner(erm_model, one):
    model, _ = erm_model
    x, y = one
    p = plane(model, x, y, EPS, seed=0)
    a, b, values = loss_grid(model, x, y, p, n=5)
    assert values.shape == (5, 5) and np.allclose(a, [-1, -0.5, 0, 0.5, 1]) and np.allclose(b, a)
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y).item()
        corner = F.cross_entropy(model(fgsm(model, x, y, eps=EPS)), y).item()
        raw = F.cross_entropy(model(x + 0.5 * p.u + 1.0 * p.v), y).item()
    assert values[2, 2] == pytest.approx(clean, rel=1e-5)
    assert values[2, 4] == pytest.approx(corner, rel=1e-5)  # row b = 0, column a = 1
    assert values[2, 4] > values[2, 0]  # uphill along the gradient sign
    clipped = F.cross_entropy(model((x + 0.5 * p.u + 1.0 * p.v).clamp(0, 1)), y).item()
    assert values[4, 3] == pytest.approx(clipped, rel=1e-5) and clipped != pytest.approx(raw, rel=1e-5)


@pytest.mark.parametrize("steps,alpha", [(1, 0.2), (7, 0.05)])
def test_trajectory_ends_at_pgd(pgd_model, batch, steps, alpha):
    model, _ = pgd_model
    x, y = batch
    traj = pgd_trajectory(model, x, y, eps=EPS, alpha=alpha, steps=steps)
    assert traj.points.shape == (steps + 1, *x.shape) and traj.losses.shape == (steps + 1, len(y))
    assert torch.equal(traj.points[0], x)
    assert torch.equal(traj.points[-1], pgd(model, x, y, eps=EPS, alpha=alpha, steps=steps, random_start=False))
    with torch.no_grad():
        assert torch.allclose(traj.losses[-1], F.cross_entropy(model(traj.points[-1]), y, reduction="none"))
    assert traj.losses[-1].mean() > traj.losses[0].mean()


def test_trajectory_with_random_start_matches_pgd_from_same_rng(pgd_model, batch):
    model, _ = pgd_model
    x, y = batch
    torch.manual_seed(5)
    traj = pgd_trajectory(model, x, y, eps=EPS, alpha=0.05, steps=3, random_start=True)
    torch.manual_seed(5)
    assert torch.equal(traj.points[-1], pgd(model, x, y, eps=EPS, alpha=0.05, steps=3, random_start=True))
    assert not torch.equal(traj.points[0], x)


def test_trajectory_validates_budget_and_handles_zero_eps(erm_model, batch):
    model, _ = erm_model
    x, y = batch
    with pytest.raises(ValueError, match="steps"):
        pgd_trajectory(model, x, y, eps=EPS, alpha=0.1, steps=-1)
    traj = pgd_trajectory(model, x, y, eps=0.0, alpha=0.1, steps=3, random_start=True)
    assert traj.points.shape == (4, *x.shape) and (traj.points == x).all()
    assert torch.equal(traj.points[-1], pgd(model, x, y, eps=0.0, alpha=0.1, steps=3))


def test_loss_grid_rejects_bad_n(erm_model, one):
    model, _ = erm_model
    p = plane(model, *one, EPS)
    with pytest.raises(ValueError, match="n must be"):
        loss_grid(model, *one, p, n=1)


def _tanh_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def test_hvp_curvature_matches_finite_differences():
    model = _tanh_mlp()
    x = torch.rand(8, 1, 2, 3, dtype=torch.float64)
    y = torch.arange(8) % 3
    d = torch.randn_like(x)
    h = 1e-5
    g_plus = input_grad(model, x + h * d, y, "ce")
    g_minus = input_grad(model, x - h * d, y, "ce")
    fd = ((g_plus - g_minus) * d).flatten(1).sum(1) / (2 * h * d.flatten(1).pow(2).sum(1))
    hvp = directional_curvature(model, x, y, d)
    assert torch.allclose(hvp, fd, rtol=1e-6, atol=1e-9)
    assert hvp.abs().max() > 1e-3  # the test is not trivially comparing zeros


def test_curvature_is_zero_for_a_linear_model_under_cw_loss():
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).double()
    x = torch.rand(4, 1, 2, 3, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    assert torch.equal(directional_curvature(model, x, y, x, loss="cw"), torch.zeros(4, dtype=torch.float64))
    assert torch.isinf(steepness(model, x, y, loss="cw")["linear_range"]).all()


def test_steepness_grad_norm_is_first_order_gain_of_a_small_sign_step():
    model = _tanh_mlp()
    x = torch.rand(8, 1, 2, 3, dtype=torch.float64)
    y = torch.arange(8) % 3
    s = steepness(model, x, y)
    alpha = 1e-6
    g = input_grad(model, x, y, "ce")
    with torch.no_grad():
        gain = (F.cross_entropy(model(x + alpha * g.sign()), y, reduction="none")
                - F.cross_entropy(model(x), y, reduction="none")) / alpha
    assert torch.allclose(s["grad_l1"], gain, rtol=1e-4)
    # linear_range r: the second-order term of l(x + h d) equals 2 ||g||_1 / r (in magnitude)
    h = 1e-4
    with torch.no_grad():
        second = 2 * (F.cross_entropy(model(x + h * g.sign()), y, reduction="none")
                      - F.cross_entropy(model(x), y, reduction="none") - h * s["grad_l1"]) / h ** 2
    assert torch.allclose(second.abs(), 2 * s["grad_l1"] / s["linear_range"], rtol=1e-3)
    assert torch.allclose(second, s["curvature"] * 6, rtol=1e-3)


def test_relu_cnn_curvature_is_nonnegative(erm_model, batch):
    s = steepness(erm_model[0], *batch)
    assert (s["curvature"] >= -1e-6).all() and (s["curvature"] > 0).any()


def test_summarize():
    out = summarize(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert out == pytest.approx({"mean": 2.5, "std": np.std([1, 2, 3, 4]), "q25": 1.75, "median": 2.5, "q75": 3.25})
    with pytest.raises(ValueError, match="values"):
        summarize(np.array([]))


def test_snapshot_callback_keeps_independent_copies_of_chosen_epochs(digits):
    callback, states = snapshot_callback([1, 3, 99])
    torch.manual_seed(0)
    model = DigitsCNN()
    small = TensorDataset(*(t[:256] for t in digits[0].tensors))
    train(model, small, digits[1], epochs=3, eps=EPS, schedule=Constant(1, 0.2, 3), callback=callback,
          options=TrainOptions(eval_every=3, eval_subset=32))
    assert sorted(states) == [1, 3]
    assert torch.equal(states[3]["fc2.weight"], model.state_dict()["fc2.weight"])
    assert not torch.equal(states[1]["fc2.weight"], states[3]["fc2.weight"])
    (e1, m1), (e3, m3) = models_at(states, DigitsCNN)
    assert (e1, e3) == (1, 3) and not m1.training
    assert torch.equal(m3.state_dict()["fc2.weight"], model.state_dict()["fc2.weight"])
    with pytest.raises(ValueError, match="epochs"):
        snapshot_callback([0])


def test_plane_points_are_clipped_to_box(one):
    x, _ = one
    p = Plane(u=torch.ones_like(x), v=torch.zeros_like(x))
    pts = p.points(x, torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0]))
    assert torch.equal(pts[0], torch.ones_like(x[0])) and torch.equal(pts[1], torch.zeros_like(x[0]))
