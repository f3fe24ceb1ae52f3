"""The criterion C (Eq. 14) and FOSC (Eq. 15) on tiny models."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from amata_lib import Plan
from amata_lib.core.attacks import fosc
from amata_lib.infra.nn import param_grad_sq_norm
from amata_lib.study.criterion import SearchSpace, criterion_c, plan_value


def linear_model(classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, classes))


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(1)
    return torch.rand(16, 1, 8, 8, generator=gen), torch.randint(0, 10, (16,), generator=gen)


def test_grad_norm_matches_manual_computation(batch):
    x, y = batch
    model = linear_model()
    model.train()
    lin = model[1]
    probs = F.softmax(lin(x.flatten(1)), dim=1).detach()
    residual = (probs - F.one_hot(y, 10).float()) / len(y)  # d mean-CE / d logits
    grad_w = residual.T @ x.flatten(1)
    grad_b = residual.sum(0)
    expected = float(grad_w.pow(2).sum() + grad_b.pow(2).sum())
    assert param_grad_sq_norm(model, x, y) == pytest.approx(expected, rel=1e-5)
    assert all(q.grad is None for q in model.parameters())
    assert model.training  # mode restored


def test_c_is_nonnegative_and_deterministic(batch):
    x, y = batch
    model = linear_model()
    plan = Plan(3, 0.05)
    space = SearchSpace(1, 8, 0.01, 0.2)
    first = criterion_c(model, x, y, plan, eps=0.2, gamma=1e-3, space=space, budget=8, seed=3)
    again = criterion_c(model, x, y, plan, eps=0.2, gamma=1e-3, space=space, budget=8, seed=3)
    assert first == again
    assert first.c >= 0 and first.best_value >= first.plan_value
    assert first.plan_value == pytest.approx(plan_value(model, x, y, plan, eps=0.2, gamma=1e-3))
    assert first.best_value == pytest.approx(plan_value(model, x, y, first.best, eps=0.2, gamma=1e-3))
    assert space.k_lo <= first.best.steps <= space.k_hi or first.best == plan
    assert all(q.grad is None for q in model.parameters())


def test_c_is_zero_when_the_space_is_the_plan(batch):
    x, y = batch
    plan = Plan(4, 0.03)
    out = criterion_c(linear_model(), x, y, plan, eps=0.2, gamma=0.01, space=SearchSpace(4, 4, 0.03, 0.03),
                      budget=5, seed=0)
    assert out.c == 0 and out.best == plan and out.evaluations == 1


def test_a_large_gamma_prefers_the_cheapest_plan(batch):
    x, y = batch
    out = criterion_c(linear_model(), x, y, Plan(5, 0.05), eps=0.2, gamma=10.0,
                      space=SearchSpace(1, 5, 0.05, 0.05), budget=10, seed=0)
    assert out.best.steps == 1
    assert out.c > 39  # saves 4 steps at gamma = 10; the gradient norms are far below 1


def test_fosc_zero_on_the_stationary_corner_and_eps_l1_at_the_centre():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    x0 = torch.full((3, 1, 8, 8), 0.5)
    y = torch.tensor([0, 1, 0])
    eps = 0.1
    x0g = x0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x0g), y, reduction="sum"), x0g)
    # two classes, linear model: the input gradient's sign is the same everywhere
    corner = x0 + eps * grad.sign()
    assert torch.allclose(fosc(model, corner, x0, y, eps), torch.zeros(3), atol=1e-6)
    centre = fosc(model, x0, x0, y, eps)
    assert torch.allclose(centre, eps * grad.flatten(1).abs().sum(1), rtol=1e-5)
    assert (centre > 0).all()


def test_bad_inputs_raise(batch):
    x, y = batch
    model = linear_model()
    with pytest.raises(ValueError, match="k_lo"):
        SearchSpace(k_lo=0)
    with pytest.raises(ValueError, match="alpha_hi"):
        SearchSpace(alpha_lo=0.2, alpha_hi=0.1)
    with pytest.raises(ValueError, match="budget"):
        criterion_c(model, x, y, Plan(2, 0.1), eps=0.2, gamma=0.0, budget=0)
    with pytest.raises(ValueError, match="gamma"):
        criterion_c(model, x, y, Plan(2, 0.1), eps=0.2, gamma=-1.0)
    with pytest.raises(ValueError, match="plan"):
        plan_value(model, x, y, (2, 0.1), eps=0.2, gamma=0.0)
    with pytest.raises(ValueError, match="same shape"):
        fosc(model, x, x[:2], y, 0.2)


# ----------------------------------------------------------------------------- exact maximum on a grid

def test_exact_c_is_the_brute_force_maximum_of_plan_value(batch):
    from amata_lib.study.criterion import criterion_c_exact

    x, y = batch
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    torch.manual_seed(0)
    plan, ks, alphas = Plan(3, 0.05), range(1, 7), (0.01, 0.04, 0.15)
    out = criterion_c_exact(model, x, y, plan, eps=0.2, gamma=1e-4, ks=ks, alphas=alphas)
    values = {Plan(k, a): plan_value(model, x, y, Plan(k, a), eps=0.2, gamma=1e-4) for a in alphas for k in ks}
    values.setdefault(plan, plan_value(model, x, y, plan, eps=0.2, gamma=1e-4))
    top = max(values, key=values.get)
    assert out.best == top
    assert out.best_value == pytest.approx(values[top], rel=1e-6)
    assert out.c == pytest.approx(values[top] - values[plan], rel=1e-6, abs=1e-12)
    assert out.evaluations == len(values) == 18 + 1  # the plan (3, 0.05) is off the grid
    assert out.passes == 3 + 1 + 3 * (6 + 6)
    assert all(q.grad is None for q in model.parameters())


class _Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.body(x)


def test_passes_count_the_forward_passes_spent(batch):
    from amata_lib.study.criterion import GridSpace, criterion_c_exact

    x, y = batch
    model = _Counting()
    out = criterion_c_exact(model, x, y, Plan(4, 0.02), eps=0.1, gamma=1e-3, ks=[2, 5, 9], alphas=[0.01, 0.05])
    assert model.calls == out.passes == 4 + 1 + 2 * (9 + 3)
    model.calls = 0
    tpe = criterion_c(model, x, y, Plan(4, 0.02), eps=0.1, gamma=1e-3, space=GridSpace(1, 9, (0.01, 0.05)),
                      budget=6, seed=0)
    assert model.calls == tpe.passes


def test_tpe_on_a_grid_is_a_lower_bound_of_the_exact_c(batch):
    from amata_lib.study.criterion import GridSpace, criterion_c_exact

    x, y = batch
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    grid = GridSpace(1, 12, (0.005, 0.02, 0.08))
    exact = criterion_c_exact(model, x, y, Plan(6, 0.03), eps=0.2, gamma=1e-4, ks=grid.ks, alphas=grid.alphas)
    for seed in range(3):
        tpe = criterion_c(model, x, y, Plan(6, 0.03), eps=0.2, gamma=1e-4, space=grid, budget=5, seed=seed)
        assert tpe.best == Plan(6, 0.03) or (tpe.best.alpha in grid.alphas and tpe.best.steps in grid.ks)
        assert tpe.c <= exact.c + 1e-12
        assert tpe.best_value == pytest.approx(plan_value(model, x, y, tpe.best, eps=0.2, gamma=1e-4))


def test_grid_space_and_exact_refuse_bad_grids(batch):
    from amata_lib.infra.errors import UserError
    from amata_lib.study.criterion import GridSpace, criterion_c_exact

    x, y = batch
    with pytest.raises(UserError, match="alphas"):
        GridSpace(1, 4, ())
    with pytest.raises(UserError, match="k_hi"):
        GridSpace(5, 4, (0.1,))
    with pytest.raises(UserError, match="ks"):
        criterion_c_exact(linear_model(), x, y, Plan(1, 0.1), eps=0.1, gamma=0.0, ks=[0, 2], alphas=[0.1])
    with pytest.raises(UserError, match="alphas"):
        criterion_c_exact(linear_model(), x, y, Plan(1, 0.1), eps=0.1, gamma=0.0, ks=[2], alphas=[-0.1])


def test_exact_c_at_several_gammas_is_one_grid_evaluation(batch):
    from amata_lib.study.criterion import criterion_c_exact, criterion_c_exact_gammas
    model, (x, y) = linear_model(), batch
    plan, ks, alphas = Plan(5, 0.04), [1, 2, 5, 8], [0.02, 0.05]
    many = criterion_c_exact_gammas(model, x, y, plan, eps=0.2, gammas=[0.0, 1e-3, 1.0], ks=ks, alphas=alphas)
    for gamma, result in many.items():
        assert result == criterion_c_exact(model, x, y, plan, eps=0.2, gamma=gamma, ks=ks, alphas=alphas)
    assert many[1.0].best.steps == 1  # a high price per step picks the cheapest plan
    assert many[0.0].c >= 0 and len({r.passes for r in many.values()}) == 1
    with pytest.raises(ValueError, match="gammas must name"):
        criterion_c_exact_gammas(model, x, y, plan, eps=0.2, gammas=[], ks=ks, alphas=alphas)


def test_strong_reference_scores_a_plan_by_its_step_on_the_reference_loss(batch):
    """With a reference the gain is <grad l(x_ref), grad l(x_plan)>: the brute force over plan_value agrees,
    a reference equal to the plan's own points gives back Eq. 14's ||grad||^2, and it costs one more pass."""
    from amata_lib.core.attacks import pgd
    from amata_lib.study.criterion import criterion_c_exact
    model, (x, y) = linear_model(), batch
    plan, ks, alphas = Plan(3, 0.05), [1, 2, 3, 6], [0.02, 0.1]
    x_ref = pgd(model, x, y, eps=0.2, alpha=0.01, steps=40, random_start=False)
    out = criterion_c_exact(model, x, y, plan, eps=0.2, gamma=1e-4, ks=ks, alphas=alphas, reference=x_ref)
    values = {Plan(k, a): plan_value(model, x, y, Plan(k, a), eps=0.2, gamma=1e-4, reference=x_ref)
              for a in alphas for k in ks}
    current = plan_value(model, x, y, plan, eps=0.2, gamma=1e-4, reference=x_ref)
    assert out.plan_value == pytest.approx(current)
    assert out.best_value == pytest.approx(max(max(values.values()), current))
    assert out.c == pytest.approx(max(max(values.values()), current) - current)
    plain = criterion_c_exact(model, x, y, plan, eps=0.2, gamma=1e-4, ks=ks, alphas=alphas)
    assert out.passes == plain.passes + 2  # the reference's gradient, in the grid and for the current plan
    own = pgd(model, x, y, eps=0.2, alpha=plan.alpha, steps=plan.steps, random_start=False)
    assert plan_value(model, x, y, plan, eps=0.2, gamma=1e-4, reference=own) == pytest.approx(
        plan_value(model, x, y, plan, eps=0.2, gamma=1e-4), rel=1e-5)
    with pytest.raises(ValueError, match="reference must be a tensor of the batch's shape"):
        plan_value(model, x, y, plan, eps=0.2, gamma=1e-4, reference=x_ref[:3])
