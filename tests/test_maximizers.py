"""Inner maximizers: FOSC (Wang et al. 2019) and FAT (Zhang et al. 2020) early-stopped PGD, and the registry."""
import pytest
import torch
from torch import nn

from amata_lib import Constant, DigitsCNN, Plan, TrainOptions, pgd, train
from amata_lib.core.attacks import fosc
from amata_lib.core.maximizers import Clean, FATMaximizer, FOSCMaximizer, PGDMaximizer
from amata_lib.methods import MAXIMIZERS, build_maximizer

EPS = 0.2


class Counting(nn.Module):
    """Wraps a model and counts the rows it forwards and back-propagates."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.forward_rows, self.backward_rows = net, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        self.forward_rows += len(x)
        if out.requires_grad:
            out.register_hook(lambda g: setattr(self, "backward_rows", self.backward_rows + len(g)))
        return out


@pytest.fixture
def batch(digits):
    x, y = digits[1].tensors
    return x[:128], y[:128]


def _grads(model):
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("maximizer", [FOSCMaximizer(EPS), FATMaximizer(EPS, budget=1),
                                       FOSCMaximizer(EPS, random_start=False), FATMaximizer(EPS, random_start=False)])
def test_output_in_ball_and_box_without_side_effects(maximizer, pgd_model, batch):
    model, _ = pgd_model
    x, y = batch
    model.train()
    before = _grads(model)
    x_adv = maximizer(model, x, y, Plan(6, 0.05))
    assert model.training
    model.eval()
    assert not x_adv.requires_grad and x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    for b, a in zip(before, _grads(model)):
        assert (b is None and a is None) or torch.equal(b, a)


def test_fosc_is_zero_at_the_aligned_corner_and_positive_elsewhere():
    g = torch.tensor([[1.0, -2.0, 0.0]])
    x = torch.full((1, 3), 0.5)
    assert fosc(None, x + 0.1 * g.sign(), x, None, 0.1, grad=g).abs().item() < 1e-6
    assert fosc(None, x, x, None, 0.1, grad=g).item() == pytest.approx(0.3)
    assert fosc(None, x - 0.1 * g.sign(), x, None, 0.1, grad=g).item() == pytest.approx(0.6)


def test_fosc_infinite_threshold_returns_the_start_after_one_pass(erm_model, batch):
    model, _ = erm_model
    x, y = batch
    m = FOSCMaximizer(EPS, first_step=False)  # the paper's Algorithm 1: a check before every step
    m.c_t = float("inf")
    torch.manual_seed(3)
    x_adv = m(model, x, y, Plan(7, 0.05))
    torch.manual_seed(3)
    assert torch.equal(x_adv, pgd(model, x, y, eps=EPS, alpha=0.05, steps=0))
    assert m.passes(Plan(7, 0.05)) == 1.0  # the gradient FOSC needs at the start point


def test_fosc_always_takes_the_first_step_as_their_code(erm_model, batch):
    """YisenWang/dynamic_adv_training pgd_attack.py: the first step is taken by every example."""
    model, _ = erm_model
    x, y = batch
    m = FOSCMaximizer(EPS)
    m.c_t = float("inf")
    torch.manual_seed(3)
    x_adv = m(model, x, y, Plan(7, 0.05))
    torch.manual_seed(3)
    assert torch.equal(x_adv, pgd(model, x, y, eps=EPS, alpha=0.05, steps=1))
    assert m.passes(Plan(7, 0.05)) == 2.0  # the first step, then the check at the new point


def test_fosc_matches_their_perturb_loop(erm_model, batch):
    """Their perturb(): FOSC = eps * |g|_1 - <g, x_k - x_start> with x_start the random start; first step always;
    after each step, an example whose FOSC at the new point is <= c stops moving."""
    model, _ = erm_model
    x, y = batch
    steps, alpha, c = 6, 0.05, 0.5
    torch.manual_seed(7)
    ours = FOSCMaximizer(EPS)
    ours.c_t = c
    out = ours(model, x, y, Plan(steps, alpha))
    torch.manual_seed(7)
    x_adv = pgd(model, x, y, eps=EPS, alpha=alpha, steps=0)  # the same uniform start
    x_start = x_adv.clone()
    moving = torch.ones(len(x), dtype=torch.bool)
    for k in range(steps):
        g = torch.autograd.grad(nn.functional.cross_entropy(model(x_adv.requires_grad_(True)), y,
                                                            reduction="sum"), x_adv)[0]
        x_adv = x_adv.detach()
        if k > 0:  # their control_indicator, set from the FOSC after the previous step
            value = EPS * g.flatten(1).abs().sum(1) - ((x_adv - x_start).flatten(1) * g.flatten(1)).sum(1)
            moving &= value > c
        stepped = torch.min(torch.max(x_adv + alpha * g.sign(), x - EPS), x + EPS).clamp(0, 1)
        x_adv = torch.where(moving.view(-1, 1, 1, 1), stepped, x_adv)
    assert torch.allclose(out, x_adv, atol=1e-6)
    assert 0 < moving.float().mean() < 1  # the example mixes stopped and moving examples


def test_fosc_weights_the_loss_per_example_from_the_second_epoch(digits):
    """Their train_models.py: sample_weight = each example's CE at its adversarial point, from epoch 1 (from 0)."""
    x, y = digits[0].tensors[0][:32], digits[0].tensors[1][:32]
    torch.manual_seed(0)
    ours, ref = DigitsCNN(), DigitsCNN()
    ref.load_state_dict(ours.state_dict())
    opt_ours, opt_ref = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (ours, ref))
    fosc_max = FOSCMaximizer(EPS)
    fosc_max.start_epoch(1, 10)
    torch.manual_seed(2)
    fosc_max.step(ours, ours, opt_ours, x, y, Plan(3, 0.05))
    torch.manual_seed(2)
    x_adv = FOSCMaximizer(EPS, weight_loss=False)(ref.eval(), x, y, Plan(3, 0.05))
    ce = nn.functional.cross_entropy(ref.train()(x_adv), y, reduction="none")
    opt_ref.zero_grad()
    (ce.detach() * ce).mean().backward()
    opt_ref.step()
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    fosc_max.start_epoch(0, 10)
    assert not fosc_max.weighted  # epoch 0: unweighted


def test_fat_adds_gaussian_noise_to_every_step(pgd_model, batch):
    """zjfheart/Friendly-Adversarial-Training earlystop.py: x + step * sign(g) + omega * N(0, 1), then projected."""
    model, _ = pgd_model
    x, y = batch
    torch.manual_seed(9)
    out = FATMaximizer(EPS, budget=100, random_start=False)(model, x, y, Plan(3, 0.05))
    torch.manual_seed(9)
    x_adv = x.clone()
    for _ in range(3):
        g = torch.autograd.grad(nn.functional.cross_entropy(model(x_adv.requires_grad_(True)), y,
                                                            reduction="sum"), x_adv)[0]
        x_adv = x_adv.detach() + 0.05 * g.sign() + 0.001 * torch.randn_like(x_adv)
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS).clamp(0, 1)
    assert torch.allclose(out, x_adv, atol=1e-6)
    assert not torch.equal(out, pgd(model, x, y, eps=EPS, alpha=0.05, steps=3, random_start=False))


def test_fosc_never_stopping_is_pgd(erm_model, batch):
    model, _ = erm_model
    x, y = batch
    m = FOSCMaximizer(EPS)
    m.c_t = float("-inf")
    torch.manual_seed(4)
    x_adv = m(model, x, y, Plan(5, 0.05))
    torch.manual_seed(4)
    assert torch.equal(x_adv, pgd(model, x, y, eps=EPS, alpha=0.05, steps=5))
    assert m.passes(Plan(5, 0.05)) == 5.0


def test_fosc_on_a_linear_margin_stops_at_the_corner_with_pgd_result():
    """CW margin of a linear 2-class model is linear (concave) in x: the corner sign(g) is optimal."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    x = 0.3 + 0.4 * torch.rand(32, 1, 8, 8)
    y = torch.randint(0, 2, (32,))
    plan = Plan(6, 0.05)
    reference = pgd(model, x, y, eps=0.1, alpha=0.05, steps=6, random_start=False, loss="cw")
    exact = FOSCMaximizer(0.1, random_start=False, loss="cw")
    exact.c_t = 0.0
    assert torch.equal(exact(model, x, y, plan), reference)
    loose = FOSCMaximizer(0.1, random_start=False, loss="cw")
    loose.c_t = 1e-4
    assert torch.equal(loose(model, x, y, plan), reference)
    assert loose.passes(plan) == 3.0  # every example: two steps (eps / alpha) reach the corner, then "stop"


def test_start_epoch_sets_linear_threshold():
    m = FOSCMaximizer(0.1, c_max=0.5, t_prime_fraction=0.8)
    assert m.c_t == 0.5
    for t, expected in [(0, 0.5), (4, 0.25), (7, 0.0625), (8, 0.0), (9, 0.0)]:
        m.start_epoch(t, 10)
        assert m.c_t == pytest.approx(expected)
    with pytest.raises(ValueError, match="t must"):
        m.start_epoch(10, 10)
    with pytest.raises(ValueError, match="epochs"):
        m.start_epoch(0, 0)


def test_fat_with_large_tau_is_pgd(pgd_model, batch):
    model, _ = pgd_model
    x, y = batch
    m = FATMaximizer(EPS, budget=100, random_start=False, omega=0)
    assert torch.equal(m(model, x, y, Plan(6, 0.05)), pgd(model, x, y, eps=EPS, alpha=0.05, steps=6,
                                                          random_start=False))
    assert m.passes(Plan(6, 0.05)) == 6.0


def test_fat_tau_zero_stops_at_first_misclassified_iterate(pgd_model, batch):
    model, _ = pgd_model
    x, y = batch
    K = 8
    iterates = [pgd(model, x, y, eps=EPS, alpha=0.05, steps=k, random_start=False) for k in range(K + 1)]
    with torch.no_grad():
        wrong = torch.stack([model(it).argmax(1) != y for it in iterates[:K]])  # checked before each step
    first_wrong = torch.where(wrong.any(0), wrong.float().argmax(0), torch.full_like(y, K))
    m = FATMaximizer(EPS, budget=0, random_start=False, omega=0)
    x_adv = m(model, x, y, Plan(K, 0.05))
    assert 0 < (first_wrong < K).sum() < len(y)  # the check is exercised both ways
    expected = torch.stack([iterates[k][i] for i, k in enumerate(first_wrong.tolist())])
    assert torch.allclose(x_adv, expected, atol=1e-6)
    with torch.no_grad():
        stopped = first_wrong < K
        assert (model(x_adv[stopped]).argmax(1) != y[stopped]).all()
    assert m.passes(Plan(K, 0.05)) == pytest.approx(((first_wrong + (first_wrong < K)).sum() / len(y)).item())


@pytest.mark.parametrize("maximizer", [FATMaximizer(EPS, budget=1), FOSCMaximizer(EPS, c_max=0.05)])
def test_passes_count_real_forward_and_backward_rows(maximizer, pgd_model, batch):
    model, _ = pgd_model
    x, y = batch
    counted = Counting(model)
    maximizer(counted, x, y, Plan(10, 0.03))
    passes = maximizer.passes(Plan(10, 0.03))
    assert passes == pytest.approx(counted.forward_rows / len(y))
    assert passes == pytest.approx(counted.backward_rows / len(y))
    assert 1 <= passes < 10  # some examples stopped early: work really saved


def test_dynamic_tau_follows_fat_schedule():
    m = FATMaximizer(0.1, budget="dynamic")
    assert m.budget_t == 0
    for t, budget in [(0, 0), (49, 0), (50, 1), (89, 1), (90, 2), (119, 2)]:
        m.start_epoch(t, 120)
        assert m.budget_t == budget
    fixed = FATMaximizer(0.1, budget=3)
    fixed.start_epoch(119, 120)
    assert fixed.budget_t == 3


def test_trainer_calls_start_epoch_and_sums_fractional_passes(digits):
    train_set, test_set = digits
    torch.manual_seed(0)
    model = DigitsCNN()
    m = FOSCMaximizer(EPS, c_max=0.5, t_prime_fraction=0.8)
    history = train(model, train_set, test_set, epochs=2, eps=EPS, schedule=Constant(5, 0.05, 2), maximizer=m,
                    options=TrainOptions(eval_every=2, eval_subset=64))
    assert m.c_t == pytest.approx(0.5 - 0.5 / 1.6)
    # 11 minibatches of 128 per epoch: each costs the update plus 1 to 5 attack passes
    assert 2 * 11 * 2 <= history[-1]["passes"] < 2 * 11 * 6


def test_registry_builds_every_name():
    assert set(MAXIMIZERS) == {"clean", "pgd", "fosc", "fat", "free", "fast", "yopo", "atta", "n-fgsm"}
    assert isinstance(build_maximizer("clean", EPS), Clean)
    assert isinstance(build_maximizer("pgd", EPS, random_start=False), PGDMaximizer)
    fosc_m = build_maximizer("fosc", EPS, c_max=0.3, t_prime_fraction=0.5)
    assert isinstance(fosc_m, FOSCMaximizer) and fosc_m.c_max == 0.3 and fosc_m.eps == EPS
    assert build_maximizer("fat", EPS, budget=2).budget_t == 2
    yopo = build_maximizer("yopo", EPS, n=5, layer="conv1")
    assert (yopo.n, yopo.layer, yopo.eps) == (5, "conv1", EPS)
    assert build_maximizer("atta", EPS, reset=3, early_reset=2, early_epochs=4).reset_period(3) == 2


@pytest.mark.parametrize("name, kwargs, match", [
    ("fgsm", {}, "name"),
    ("fat", {"c_max": 0.5}, "c_max"),
    ("fosc", {"budget": 1}, "budget"),
    ("clean", {"random_start": True}, "random_start"),
    ("fat", {"budget": -1}, "budget"),
    ("fat", {"budget": "sometimes"}, "budget"),
    ("fosc", {"c_max": -0.1}, "c_max"),
    ("fosc", {"t_prime_fraction": 0.0}, "t_prime_fraction"),
    ("fosc", {"loss": "mse"}, "loss"),
])
def test_registry_rejects_bad_input(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_maximizer(name, EPS, **kwargs)


def test_bad_eps_and_missing_plan():
    with pytest.raises(ValueError, match="eps"):
        build_maximizer("fat", -0.1)
    with pytest.raises(ValueError, match="plan"):
        FOSCMaximizer(EPS)(nn.Linear(1, 1), torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), None)
