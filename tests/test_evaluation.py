import pytest
import torch

from amata_lib import accuracy, cw_accuracy, pgd_accuracy, time_to_target


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
