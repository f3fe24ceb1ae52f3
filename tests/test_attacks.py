import pytest
import torch
import torch.nn.functional as F

from amata_lib import LeNet, fgsm, pgd
from amata_lib.core.attacks import cw_loss, project


@pytest.fixture
def batch(digits):
    x, y = digits[1].tensors
    return x[:64], y[:64]


@pytest.mark.parametrize("random_start", [True, False])
@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_pgd_stays_in_ball_and_box(erm_model, batch, random_start, loss):
    model, _ = erm_model
    x, y = batch
    x_adv = pgd(model, x, y, eps=0.2, alpha=0.05, steps=7, random_start=random_start, loss=loss)
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad


def test_pgd_random_start_is_projected_to_box():
    """With zero steps the random start alone must already lie in [0, 1] and in the ball."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]]).repeat(32, 1, 1, 1)
    x_adv = pgd(model, x, torch.zeros(32, dtype=torch.long), eps=0.3, alpha=0.1, steps=0)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    assert (x_adv != x).any()


def test_pgd_raises_loss_above_clean(erm_model, batch):
    model, _ = erm_model
    x, y = batch
    x_adv = pgd(model, x, y, eps=0.2, alpha=0.05, steps=10)
    with torch.no_grad():
        clean, adv = F.cross_entropy(model(x), y), F.cross_entropy(model(x_adv), y)
    assert adv > clean + 1.0


def test_more_steps_do_not_weaken_attack_on_average(erm_model, batch):
    model, _ = erm_model
    x, y = batch
    with torch.no_grad():
        l1 = F.cross_entropy(model(pgd(model, x, y, eps=0.2, alpha=0.2, steps=1, random_start=False)), y)
        l10 = F.cross_entropy(model(pgd(model, x, y, eps=0.2, alpha=0.05, steps=10, random_start=False)), y)
    assert l10 >= l1


def test_pgd_without_random_start_is_deterministic(erm_model, batch):
    model, _ = erm_model
    x, y = batch
    a = pgd(model, x, y, eps=0.2, alpha=0.05, steps=5, random_start=False)
    b = pgd(model, x, y, eps=0.2, alpha=0.05, steps=5, random_start=False)
    assert torch.equal(a, b)


def test_eps_zero_returns_x(erm_model, batch):
    model, _ = erm_model
    x, y = batch
    assert torch.equal(pgd(model, x, y, eps=0.0, alpha=0.1, steps=5), x)
    assert torch.equal(fgsm(model, x, y, eps=0.0), x)


@pytest.mark.parametrize("mode", [True, False])
def test_attack_leaves_param_grads_and_mode_untouched(erm_model, batch, mode):
    model, _ = erm_model
    x, y = batch
    model.train(mode)
    for p in model.parameters():
        p.grad = None
    pgd(model, x, y, eps=0.2, alpha=0.05, steps=3)
    fgsm(model, x, y, eps=0.2)
    assert all(p.grad is None for p in model.parameters())
    assert model.training is mode
    model.eval()


def test_fgsm_is_one_signed_step(erm_model, batch):
    model, _ = erm_model
    x, y = batch
    x_adv = fgsm(model, x, y, eps=0.1)
    xr = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    assert torch.allclose(x_adv, (x + 0.1 * grad.sign()).clamp(0, 1))


def test_cw_loss_is_margin():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    y = torch.tensor([0, 2])
    assert torch.allclose(cw_loss(logits, y), torch.tensor([2.0 - 3.0, 5.0 - (-1.0)]))


def test_project():
    x = torch.full((1, 1, 2, 2), 0.5)
    out = project(torch.tensor([[[[0.9, 0.1], [0.55, -3.0]]]]), x, 0.2)
    assert torch.allclose(out, torch.tensor([[[[0.7, 0.3], [0.55, 0.3]]]]))


@pytest.mark.parametrize("kwargs, name", [
    (dict(eps=-0.1, alpha=0.1, steps=1), "eps"),
    (dict(eps=float("nan"), alpha=0.1, steps=1), "eps"),
    (dict(eps=0.1, alpha=float("inf"), steps=1), "alpha"),
    (dict(eps=0.1, alpha=0.1, steps=1.5), "steps"),
    (dict(eps=0.1, alpha=0.1, steps=-1), "steps"),
    (dict(eps=0.1, alpha=0.1, steps=1, loss="hinge"), "loss"),
])
def test_bad_attack_parameters(kwargs, name):
    model = LeNet()
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=name):
        pgd(model, x, y, **kwargs)
