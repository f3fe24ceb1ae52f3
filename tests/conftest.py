"""Shared fixtures: the bundled digits data and small models trained once per session."""
import pytest
import torch

from amata_lib import Constant, DigitsCNN, TrainOptions, load, train


@pytest.fixture(scope="session")
def digits():
    return load("digits")


@pytest.fixture(scope="session")
def erm_model(digits):
    """DigitsCNN trained 10 epochs on clean digits (about 1 s on 2 cores)."""
    torch.manual_seed(0)
    model = DigitsCNN()
    history = train(model, *digits, epochs=10, eps=0.2, options=TrainOptions(eval_every=10))
    return model, history


@pytest.fixture(scope="session")
def pgd_model(digits):
    """DigitsCNN adversarially trained 10 epochs with PGD-5 at eps 0.2."""
    torch.manual_seed(0)
    model = DigitsCNN()
    history = train(model, *digits, epochs=10, eps=0.2, schedule=Constant(5, 0.1, 10),
                    options=TrainOptions(eval_every=10))
    return model, history
