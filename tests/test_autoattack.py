"""AutoAttack evaluation (package ``pyautoattack``) and the robustness report."""
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

from amata_lib import accuracy, pgd_accuracy
from amata_lib.evaluation import MASKING_GAP, autoattack_accuracy, robustness_report

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
    assert report["gradient_masking_suspect"] == (report["autoattack"] < report["pgd"] - MASKING_GAP)
    assert isinstance(report["autoattack_flags"], list)


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
