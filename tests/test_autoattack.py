"""AutoAttack evaluation (package ``pyautoattack``) and the robustness report."""
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

from amata_lib.core.evaluation import accuracy, autoattack_accuracy, masking_reasons, pgd_accuracy, robustness_report

EPS = 0.2
APGD_CE = {"version": "custom", "attacks": ["apgd-ce"]}


@pytest.fixture
def head(digits):
    x, y = digits[1].tensors
    return TensorDataset(x[:64], y[:64])


def test_autoattack_is_at_least_as_strong_as_pgd_on_erm(erm_model, head):
    pytest.importorskip("pyautoattack", reason="pyautoattack is not installed (pip install pyautoattack)")
    model, _ = erm_model
    aa = autoattack_accuracy(model, head, eps=EPS, n=64, **APGD_CE)
    torch.manual_seed(0)
    robust = pgd_accuracy(model, head, eps=EPS, alpha=2.5 * EPS / 20, steps=20)
    assert aa <= accuracy(model, head)
    assert aa <= robust + 0.02
    assert aa < 0.2  # the clean ERM model is not robust at eps = 0.2


def test_autoattack_uses_the_first_n_examples(pgd_model, digits):
    pytest.importorskip("pyautoattack", reason="pyautoattack is not installed (pip install pyautoattack)")
    model, _ = pgd_model
    x, y = digits[1].tensors
    whole = autoattack_accuracy(model, digits[1], eps=EPS, n=24, **APGD_CE)
    assert whole == autoattack_accuracy(model, TensorDataset(x[:24], y[:24]), eps=EPS, n=1000, **APGD_CE)
    assert whole * 24 == pytest.approx(round(whole * 24))


def test_report_is_consistent_and_leaves_no_trace(pgd_model, head):
    pytest.importorskip("pyautoattack", reason="pyautoattack is not installed (pip install pyautoattack)")
    model, _ = pgd_model
    model.train()
    rng = torch.get_rng_state()
    flags = [p.requires_grad for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    report = robustness_report(model, head, eps=EPS, autoattack_n=64, autoattack_version="custom",
                               autoattack_attacks=["apgd-ce"])
    assert model.training
    model.eval()
    assert torch.equal(torch.get_rng_state(), rng)
    assert flags == [p.requires_grad for p in model.parameters()]
    for before, p in zip(grads, model.parameters()):
        assert (before is None and p.grad is None) or torch.equal(before, p.grad)
    assert report["n"] == 64
    assert 0 <= report["autoattack"] <= report["clean"] and report["pgd"] <= report["clean"]
    assert report["cw"] <= report["clean"]
    assert report["gradient_masking_suspect"] == bool(report["masking_reasons"]) == bool(masking_reasons(report))
    assert isinstance(report["autoattack_flags"], list)
    free = report["gradient_free"]
    assert free["attack"] == "square" and free["n"] == 64 and 0 <= free["acc"] <= report["clean"]
    assert report["input_gradients"] == {"n": 64, "zero_fraction": 0.0, "nonfinite": 0}


class Rounding(torch.nn.Module):
    """A model that rounds its input to 4 grey levels: its input gradient is zero everywhere."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 3) / 3)


@pytest.mark.slow
def test_a_rounding_model_is_flagged_as_masking_by_square_and_its_zero_gradients(pgd_model, head):
    """PGD cannot move a model whose gradient is zero, so it looks robust; the gradient-free Square attack
    is not fooled, and the input gradients say why. The same network without rounding is not flagged."""
    pytest.importorskip("pyautoattack", reason="pyautoattack is not installed (pip install pyautoattack)")
    model, _ = pgd_model
    masked = Rounding(model)
    report = robustness_report(masked, head, eps=EPS, autoattack_n=64, autoattack_version="custom",
                               autoattack_attacks=["apgd-ce"])
    assert report["pgd"] >= report["clean"] - 0.05  # only the random start moves it
    assert report["gradient_free"]["acc"] < report["pgd"] - 0.2
    assert report["input_gradients"]["zero_fraction"] == 1.0
    assert report["gradient_masking_suspect"] and len(report["masking_reasons"]) >= 2
    assert any("Square" in r for r in report["masking_reasons"])
    honest = robustness_report(model, head, eps=EPS, autoattack_n=64, autoattack_version="custom",
                               autoattack_attacks=["apgd-ce"])
    assert honest["pgd"] < report["pgd"] and not honest["gradient_masking_suspect"], honest["masking_reasons"]


def test_missing_package_raises_clear_import_error(monkeypatch, erm_model, head):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    with pytest.raises(ImportError, match="pip install 'pyautoattack"):
        autoattack_accuracy(erm_model[0], head, eps=EPS, n=8)


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "n must"),
    ({"version": "rand"}, "version"),
    ({"version": "custom"}, "attacks"),
    ({"attacks": ["apgd-ce"]}, "attacks"),
])
def test_bad_arguments(kwargs, match, erm_model, head):
    with pytest.raises(ValueError, match=match):
        autoattack_accuracy(erm_model[0], head, eps=EPS, **kwargs)
