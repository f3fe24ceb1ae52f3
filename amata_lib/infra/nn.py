"""Small model utilities shared by the attacks' users: the eval-mode context and a parameter-gradient norm."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[torch.device]:
    """Run the block with ``model.eval()``, restore the previous mode after; yields the model's device."""
    was_training = model.training
    model.eval()
    try:
        yield next(model.parameters()).device
    finally:
        model.train(was_training)


def _param_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gradients of the batch-mean cross-entropy with respect to the trainable parameters, one per tensor."""
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.enable_grad():
        return torch.autograd.grad(F.cross_entropy(model(x), y), params)


def param_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``grad_theta mean_i CE(model(x_i), y_i)`` over the trainable parameters as one float vector.

    In the model's current mode; uses :func:`torch.autograd.grad`, so the parameters'
    ``.grad`` are left untouched.
    """
    return torch.cat([g.float().flatten() for g in _param_grads(model, x, y)])


def param_grad_sq_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """``||grad_theta mean_i CE(model(x_i), y_i)||^2`` over the trainable parameters, in the model's current mode.

    Summed tensor by tensor (the order the stored results were computed in); ``.grad`` is left untouched.
    """
    return float(sum((g.float() ** 2).sum() for g in _param_grads(model, x, y)))
