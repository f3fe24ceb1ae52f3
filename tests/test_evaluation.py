import pytest
import torch

from amata_lib.core.evaluation import accuracy, cw_accuracy, pgd_accuracy
from amata_lib.core.history import time_to_target


def test_restarts_only_lower_accuracy(pgd_model, digits):
    model, _ = pgd_model
    test = digits[1]
    torch.manual_seed(0)
    one = pgd_accuracy(model, test, eps=0.2, alpha=0.05, steps=5, restarts=1)
    torch.manual_seed(0)
    three = pgd_accuracy(model, test, eps=0.2, alpha=0.05, steps=5, restarts=3)
    assert three <= one <= accuracy(model, test)


def test_cw_attack_hurts_erm(erm_model, digits):
    model, _ = erm_model
    assert cw_accuracy(model, digits[1], eps=0.2, alpha=0.025) < accuracy(model, digits[1]) - 0.5


def test_evaluation_restores_mode(erm_model, digits):
    model, _ = erm_model
    model.train()
    accuracy(model, digits[1])
    pgd_accuracy(model, digits[1], eps=0.1, alpha=0.05, steps=1)
    assert model.training
    model.eval()


def test_time_to_target():
    history = [
        {"epoch": 1, "time": 1.0, "passes": 10, "robust_acc": 0.1},
        {"epoch": 2, "time": 2.5, "passes": 25, "robust_acc": None},
        {"epoch": 3, "time": 4.0, "passes": 40, "robust_acc": 0.5},
        {"epoch": 4, "time": 5.0, "passes": 55, "robust_acc": 0.45},
    ]
    assert time_to_target(history, 0.5) == {"epoch": 3, "time": 4.0, "passes": 40, "robust_acc": 0.5}
    assert time_to_target(history, 0.05)["epoch"] == 1
    assert time_to_target(history, 0.6) is None
    assert time_to_target(history, 0.6, stay=True) is None
    with pytest.raises(ValueError, match="robust_acc"):
        time_to_target(history, 50)


def test_time_to_target_that_stays():
    accs = [0.1, 0.35, 0.2, None, 0.32, 0.4, 0.31]
    history = [{"epoch": i + 1, "time": float(i), "passes": 10 * (i + 1), "robust_acc": a} for i, a in enumerate(accs)]
    assert time_to_target(history, 0.3)["epoch"] == 2  # one lucky evaluation
    assert time_to_target(history, 0.3, stay=True)["epoch"] == 5  # above the target from epoch 5 on
    assert time_to_target(history, 0.35, stay=True) is None  # the run ends below 0.35
    assert time_to_target(history, 0.31, stay=True)["epoch"] == 5


# ----------------------------------------------------------------------------- any-iterate rule

class Bump(torch.nn.Module):
    """One pixel t in [0, 1], label 0: the cross-entropy rises with t on [0.2, 0.6], but class 1
    wins only inside the band |t - 0.52| < 0.0707; t = 0.6 is classified correctly again."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # the evaluation looks up the device
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        t = x.flatten(1)[:, 0] + 0 * self.dummy
        return torch.stack([torch.zeros_like(t), 0.1 - 20 * (t - 0.52) ** 2, -4 + 19.75 * (t - 0.4)], 1)


def test_bump_model_is_what_the_test_needs():
    t = torch.linspace(0.2, 0.6, 201).reshape(-1, 1, 1, 1).requires_grad_(True)
    logits = Bump()(t)
    loss = torch.nn.functional.cross_entropy(logits, torch.zeros(201, dtype=torch.long), reduction="sum")
    (grad,) = torch.autograd.grad(loss, t)
    assert (grad > 0).all()  # sign ascent moves every point up, to the box corner 0.6 of the ball
    wrong = logits.argmax(1) != 0
    band = (t.flatten() - 0.52).abs() < 0.07
    assert torch.equal(wrong, band) or wrong[band].all()
    assert not wrong[-1] and not wrong[0]


def test_a_middle_iterate_that_fools_breaks_the_example():
    from amata_lib.core.attacks import pgd, pgd_start
    from amata_lib.core.evaluation import pgd_broken

    model = Bump()
    x, y = torch.full((64, 1, 1, 1), 0.4), torch.zeros(64, dtype=torch.long)  # clean: correct
    torch.manual_seed(3)
    start = pgd_start(x, 0.2).flatten()
    torch.manual_seed(3)
    final = pgd(model, x, y, eps=0.2, alpha=0.03, steps=15)
    torch.manual_seed(3)
    broken = pgd_broken(model, x, y, eps=0.2, alpha=0.03, steps=15)
    assert torch.allclose(final, torch.full_like(final, 0.6))
    assert (model(final).argmax(1) == 0).all()  # the old rule (last iterate only): all robust
    below = start < 0.44  # correct at the start, then walks through the band
    assert below.sum() >= 30
    assert broken[below].all()  # the new rule: broken at a middle iterate
    assert torch.equal(broken, start < 0.59)  # above the band: straight to 0.6, never fooled
    torch.manual_seed(3)
    acc = pgd_accuracy(model, torch.utils.data.TensorDataset(x, y), eps=0.2, alpha=0.03, steps=15)
    assert acc == pytest.approx(float((~broken).float().mean()))
    assert acc < 0.5


def test_checking_every_iterate_costs_one_forward_beyond_the_gradient_passes():
    from amata_lib.core.evaluation import pgd_broken

    model = Bump()
    x, y = torch.full((8, 1, 1, 1), 0.1), torch.zeros(8, dtype=torch.long)  # far from the band: never fooled
    broken = pgd_broken(model, x, y, eps=0.05, alpha=0.01, steps=7)
    assert not broken.any() and model.calls == 7 + 1
    model.calls = 0
    x = torch.full((8, 1, 1, 1), 0.52)  # fooled at the start: frozen after the first pass
    assert pgd_broken(model, x, y, eps=0.001, alpha=0.01, steps=7).all() and model.calls == 1


def test_frozen_iterates_keep_their_point_and_earlier_iterates_stay_valid():
    from amata_lib.core.attacks import AttackerStep, pgd_iterates

    model = Bump()
    x, y = torch.tensor([0.41, 0.3]).reshape(2, 1, 1, 1), torch.zeros(2, dtype=torch.long)

    def stop(it):
        return (it.logits.argmax(1) != 0) & (it.rows == 0)

    its = list(pgd_iterates(model, x, y, x.clone(), step=AttackerStep(0.2, 0.02), steps=6, stop=stop))
    first = [float(it[0]) for it in its]
    second = [float(it[1]) for it in its]
    assert second == pytest.approx([0.3 + 0.02 * (k + 1) for k in range(6)])  # never frozen, distinct tensors
    assert first[-1] == first[-2] and 0.449 < first[-1] < 0.591  # row 0 stopped inside the band


def test_any_iterate_rule_is_never_weaker_than_the_last_iterate(pgd_model, digits):
    from amata_lib.core.attacks import pgd

    model, _ = pgd_model
    x, y = digits[1].tensors
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    last = clean.clone()
    last[clean] = model(pgd(model, x[clean], y[clean], eps=0.2, alpha=0.05, steps=10)).argmax(1) == y[clean]
    torch.manual_seed(0)
    ours = pgd_accuracy(model, digits[1], eps=0.2, alpha=0.05, steps=10, batch_size=len(y))
    assert round(ours * len(y)) <= int(last.sum())  # counts, not a float32 mean against a float64 fraction
