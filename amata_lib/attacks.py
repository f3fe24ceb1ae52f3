"""L-infinity attacks: FGSM, PGD (Madry et al.), and the Carlini-Wagner margin loss.

Conventions shared by every function here:

* the model receives inputs in ``[0, 1]``; any normalisation lives inside the
  model, so ``eps`` and ``alpha`` are always in pixel units;
* an attack never writes into the model's parameter gradients (it uses
  :func:`torch.autograd.grad` with respect to the input only) and never changes
  the model's train/eval mode -- the caller chooses the mode;
* the returned batch is detached from the autograd graph.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_real

LOSSES = ("ce", "cw")


def cw_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin ``max_{j != y} z_j - z_y`` per example (to be maximised).

    The margin is not clamped (confidence ``kappa`` = infinity): the attack keeps
    pushing after the example is misclassified, which does not change accuracy.
    """
    correct = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.max(dim=1).values - correct


def attack_loss(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Per-example loss the attacker ascends: cross-entropy (``"ce"``) or CW margin (``"cw"``)."""
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if loss == "cw":
        return cw_loss(logits, y)
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def _check_budget(eps: float, alpha: float, steps: int, loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    check_real("eps", eps, minimum=0)
    check_real("alpha", alpha, minimum=0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Gradient of the summed attack loss with respect to the input only (works under ``no_grad``)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        value = attack_loss(model(x), y, loss).sum()
        (grad,) = torch.autograd.grad(value, x)
    return grad


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto the L-infinity ball of radius ``eps`` around ``x``, then onto ``[0, 1]``."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, loss: str = "ce") -> torch.Tensor:
    """Fast gradient sign method: one signed step of size ``eps`` from ``x``, clipped to [0, 1]."""
    _check_budget(eps, eps, 1, loss)
    if eps == 0:
        return x.detach().clone()
    return project(x + eps * _input_grad(model, x, y, loss).sign(), x, eps).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    loss: str = "ce",
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """L-infinity PGD (the paper's Eq. 2): ``steps`` signed-gradient ascent steps of size ``alpha``.

    Parameters
    ----------
    model : nn.Module
        Classifier taking inputs in ``[0, 1]`` and returning logits.
    x, y : torch.Tensor
        Clean batch and integer labels.
    eps : float
        Radius of the L-infinity ball (pixel units).
    alpha : float
        Step size of each ascent step.
    steps : int
        Number of ascent steps K; each costs one forward and one backward pass.
    random_start : bool
        Start from a uniform point in the ball (Madry et al.); the start is
        projected onto ``[0, 1]`` before the first step. ``False`` starts at ``x``
        as in the paper's Algorithm 1.
    loss : {"ce", "cw"}
        Cross-entropy, or the Carlini-Wagner margin (PGD on it is the "CW attack").
    start : torch.Tensor, optional
        A start point of ``x``'s shape (projected onto the ball and ``[0, 1]`` first),
        used instead of ``x`` or the random start -- e.g. a perturbation kept from an
        earlier epoch (ATTA) or a fixed one (Amata+Fast).

    Returns
    -------
    torch.Tensor
        The adversarial batch, detached, inside the ball and inside ``[0, 1]``.
    """
    _check_budget(eps, alpha, steps, loss)
    x = x.detach()
    if eps == 0:
        return x.clone()
    if start is not None:
        if start.shape != x.shape:
            raise ValueError(f"start must have the shape of x {tuple(x.shape)}, got {tuple(start.shape)}")
        x_adv = project(start.detach(), x, eps)
    elif random_start:
        x_adv = project(x + torch.empty_like(x).uniform_(-eps, eps), x, eps)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv = project(x_adv + alpha * _input_grad(model, x_adv, y, loss).sign(), x, eps)
    return x_adv.detach()
