"""The outer optimiser and its learning-rate schedules (constant, multistep, cosine, Wong et al.'s cyclic)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..infra.checks import check_choice

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "multistep", "cosine", "cyclic")


def make_optimizer(model: nn.Module, optimizer: str, lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """SGD (with momentum) or Adam over all parameters."""
    check_choice("optimizer", optimizer, OPTIMIZERS)
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


class LRSchedule:
    """A torch learning-rate scheduler and when the trainer steps it: after every minibatch or every epoch."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler, per_batch: bool) -> None:
        self.scheduler, self.per_batch = scheduler, per_batch

    def after_batch(self) -> None:
        """Called after every parameter step of a minibatch."""
        if self.per_batch:
            self.scheduler.step()

    def after_epoch(self) -> None:
        """Called after every epoch."""
        if not self.per_batch:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def cyclic_factor(k: int, epochs: int, batches: int) -> float:
    """Wong et al.'s cyclic rate for minibatch ``k`` (from 0) as a fraction of the peak ``lr``.

    Their ``MNIST/train_mnist.py``: ``np.interp(t, [0, epochs * 2 // 5, epochs], [0, lr_max, 0])``
    at ``t = epoch + (i + 1) / batches``, set before minibatch ``i``'s step: a triangle from 0
    up to ``lr`` at 2/5 of training and down to 0 at its end. (Their CIFAR-10
    ``train_fgsm.py`` peaks at the middle instead.)
    """
    return float(np.interp((k + 1) / batches, [0, epochs * 2 // 5, epochs], [0.0, 1.0, 0.0]))


def make_lr_schedule(opt: torch.optim.Optimizer, lr_schedule: str, epochs: int, batches: int = 1) -> LRSchedule:
    """Learning-rate schedule: constant, multistep (x0.1 at 50 % and 75 % of epochs), cosine (per epoch),
    or cyclic (per minibatch, :func:`cyclic_factor`; ``batches`` minibatches per epoch)."""
    check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
    if lr_schedule == "cyclic":
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: cyclic_factor(k, epochs, batches))
        return LRSchedule(scheduler, per_batch=True)
    if lr_schedule == "constant":
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    elif lr_schedule == "multistep":
        milestones = sorted({max(1, epochs // 2), max(1, (3 * epochs) // 4)})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    return LRSchedule(scheduler, per_batch=False)


