"""Clean and robust accuracy, and the paper's headline measure: time to a robust accuracy.

Every function evaluates in ``eval()`` mode, in fp32, and restores the model's
previous mode afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from .attacks import pgd


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[torch.device]:
    was_training = model.training
    model.eval()
    try:
        yield next(model.parameters()).device
    finally:
        model.train(was_training)


def _batches(dataset: Dataset, batch_size: int, device: torch.device):
    from .training import batches  # late import: training imports this module
    return batches(dataset, batch_size, device=device)


def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> float:
    """Fraction of ``dataset`` the model classifies correctly."""
    correct = total = 0
    with _eval_mode(model) as dev, torch.no_grad():
        for x, y in _batches(dataset, batch_size, dev):
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def pgd_accuracy(model: nn.Module, dataset: Dataset, *, eps: float, alpha: float, steps: int,
                 restarts: int = 1, loss: str = "ce", batch_size: int = 512) -> float:
    """Accuracy under PGD-``steps``; an example counts only if it survives every restart.

    Each restart begins from a fresh uniform random start; the first restart that
    fools the model on an example decides it (worst case per example). Examples the
    model already gets wrong count as wrong.
    """
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")
    correct = total = 0
    with _eval_mode(model) as dev:
        for x, y in _batches(dataset, batch_size, dev):
            with torch.no_grad():
                robust = model(x).argmax(1) == y
            for _ in range(restarts):
                idx = robust.nonzero().squeeze(1)
                if len(idx) == 0:
                    break
                x_adv = pgd(model, x[idx], y[idx], eps=eps, alpha=alpha, steps=steps, loss=loss)
                with torch.no_grad():
                    robust[idx] = model(x_adv).argmax(1) == y[idx]
            correct += int(robust.sum())
            total += len(y)
    return correct / total


def cw_accuracy(model: nn.Module, dataset: Dataset, *, eps: float, alpha: float, steps: int = 20,
                restarts: int = 1, batch_size: int = 512) -> float:
    """Accuracy under the CW attack of the paper's Table 2: PGD on the Carlini-Wagner margin loss."""
    return pgd_accuracy(model, dataset, eps=eps, alpha=alpha, steps=steps, restarts=restarts,
                        loss="cw", batch_size=batch_size)


def time_to_target(history: Sequence[dict], robust_acc: float) -> dict | None:
    """Training time and passes at the first evaluated epoch reaching ``robust_acc``.

    Returns ``{"epoch", "time", "passes", "robust_acc"}`` or ``None`` if the run never
    reaches the target. ``time`` excludes evaluation (see :func:`amata_lib.train`).
    """
    if not 0 <= robust_acc <= 1:
        raise ValueError(f"robust_acc must be a fraction in [0, 1], got {robust_acc!r}")
    for rec in history:
        if rec.get("robust_acc") is not None and rec["robust_acc"] >= robust_acc:
            return {k: rec[k] for k in ("epoch", "time", "passes", "robust_acc")}
    return None
