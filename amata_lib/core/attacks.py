"""L-infinity attacks on one engine: FGSM, PGD (Madry et al.), and the Carlini-Wagner margin loss.

The engine is :func:`pgd_iterates`: from a start point it takes gradient steps, each
an :class:`AttackerStep` (where to start, how to step, where to project), and may
freeze examples on a stopping rule. Everything else is built on it: :func:`pgd` and
:func:`fgsm` here, the robust test (:func:`amata_lib.core.evaluation.pgd_broken`), the
early-stopping maximizers FOSC and FAT (their rule, and FAT's noisy step), N-FGSM's
unprojected step, the criterion C's grid and the landscapes' trajectories.

Conventions shared by every function here:

* the model receives inputs in ``[0, 1]``; any normalisation lives inside the
  model, so ``eps`` and ``alpha`` are always in pixel units;
* an attack never writes into the model's parameter gradients (it uses
  :func:`torch.autograd.grad` with respect to the input only) and never changes
  the model's train/eval mode -- the caller chooses the mode;
* the returned batch is detached from the autograd graph.
"""
from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..infra.checks import check_bool, check_choice, check_pixels, check_real, check_strict_int
from ..infra.errors import UserError

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
    check_choice("loss", loss, LOSSES)
    return cw_loss(logits, y)


def check_budget(eps: float, alpha: float, steps: int, loss: str) -> None:
    """An attack's budget: ``eps`` in ``[0, 1]``, ``alpha >= 0``, ``steps`` an int ``>= 0``, a known loss."""
    check_choice("loss", loss, LOSSES)
    check_real("eps", eps, minimum=0, maximum=1)
    check_real("alpha", alpha, minimum=0)
    check_strict_int("steps", steps, minimum=0)


def logits_and_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    loss: str = "ce") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (detached) and input gradient of the summed attack loss from one forward+backward pass."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad(attack_loss(logits, y, loss).sum(), x)
    return logits.detach(), grad


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Gradient of the summed attack loss with respect to the input only (works under ``no_grad``)."""
    return logits_and_grad(model, x, y, loss)[1]


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto the L-infinity ball of radius ``eps`` around ``x``, then onto ``[0, 1]``."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def ascent_step(x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """One step of Eq. 2: ``x_adv + alpha * sign(grad)``, projected onto the ball around ``x`` and ``[0, 1]``."""
    return project(x_adv + alpha * grad.sign(), x, eps)


class AttackerStep:
    """One step of an L-infinity attack around ``x``: its random start and its ascent step (Eq. 2 by default).

    Subclasses change :meth:`step` (FAT's noise, N-FGSM's missing projection) or
    :meth:`random_start` (N-FGSM's wider noise); the engine :func:`pgd_iterates` calls them.
    """

    def __init__(self, eps: float, alpha: float) -> None:
        self.eps, self.alpha = eps, alpha

    def random_start(self, x: torch.Tensor) -> torch.Tensor:
        """A uniform point of the ball around ``x``, projected onto ``[0, 1]`` (Madry et al.)."""
        return project(x + torch.empty_like(x).uniform_(-self.eps, self.eps), x, self.eps)

    def step(self, x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:func:`ascent_step` with this step's ``alpha`` and ``eps``."""
        return ascent_step(x_adv, grad, x, self.alpha, self.eps)


class NoisyStep(AttackerStep):
    """FAT's step: ``x_adv + alpha * sign(grad) + omega * N(0, 1)``, then projected (Zhang et al. 2020)."""

    def __init__(self, eps: float, alpha: float, omega: float) -> None:
        super().__init__(eps, alpha)
        self.omega = omega

    def step(self, x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.omega == 0:
            return super().step(x_adv, grad, x)
        return project(x_adv + self.alpha * grad.sign() + self.omega * torch.randn_like(x_adv), x, self.eps)


class Iterate(NamedTuple):
    """What a stopping rule sees before step ``k`` (from 0): the examples still moving and their pass.

    ``x_adv``, ``x`` and ``y`` are those examples' current point, clean input and label;
    ``logits`` and ``grad`` come from the forward+backward pass at ``x_adv``; ``rows``
    are their positions in the batch.
    """

    x_adv: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor
    grad: torch.Tensor
    rows: torch.Tensor
    k: int


def start_point(x: torch.Tensor, step: AttackerStep, *, random_start: bool = True,
                start: torch.Tensor | None = None) -> torch.Tensor:
    """PGD's ``x^0``: ``start`` projected, else ``step.random_start(x)`` if ``random_start``, else ``x``."""
    x = x.detach()
    if start is not None:
        if start.shape != x.shape:
            raise UserError(f"start must have the shape of x {tuple(x.shape)}, got {tuple(start.shape)}")
        return project(start.detach(), x, step.eps)
    if check_bool("random_start", random_start):
        return step.random_start(x)
    return x.clone()


def pgd_start(x: torch.Tensor, eps: float, *, random_start: bool = True,
              start: torch.Tensor | None = None) -> torch.Tensor:
    """PGD's ``x^0`` for the L-infinity ball of radius ``eps`` (see :func:`start_point`)."""
    return start_point(x, AttackerStep(eps, 0.0), random_start=random_start, start=start)


def pgd_iterates(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *, step: AttackerStep,
                 steps: int, loss: str = "ce",
                 stop: Callable[[Iterate], torch.Tensor] | None = None) -> Iterator[torch.Tensor]:
    """The attack engine: the iterates ``x^1 .. x^K`` from ``x_adv = x^0``, one ``step.step`` each (unchecked inputs).

    Each iterate is a new tensor (earlier ones stay valid). ``stop``, if given, is
    called once per forward+backward pass, before that pass's step, with an
    :class:`Iterate` of the examples still moving; it returns a boolean mask over them.
    The examples it marks are frozen -- they keep their current point in every later
    iterate and take no further pass -- and the iteration ends early once all are
    frozen. Looking at iterate ``k`` this way is free: its logits come from the pass
    that computes its gradient. (Wong et al.'s ``attack_pgd`` freezes misclassified
    examples in the same way; see :func:`amata_lib.core.evaluation.pgd_broken`.)
    """
    rows = None  # the examples still moving; None while that is all of them
    for k in range(steps):
        part = (x_adv, x, y) if rows is None else (x_adv[rows], x[rows], y[rows])
        logits, grad = logits_and_grad(model, part[0], part[2], loss)
        if stop is None:
            x_adv = step.step(x_adv, grad, x)
            yield x_adv
            continue
        if rows is None:
            rows = torch.arange(len(x), device=x.device)
        go = ~stop(Iterate(*part, logits, grad, rows, k))
        rows, part, grad = rows[go], [t[go] for t in part], grad[go]
        if len(rows) == 0:
            return
        x_adv = x_adv.index_put((rows,), step.step(part[0], grad, part[1]))
        yield x_adv


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

    Raises
    ------
    UserError
        A bad budget, or ``x`` not in ``[0, 1]`` (the ball around such a point may not
        meet the box, and the result would leave the ball).
    """
    check_budget(eps, alpha, steps, loss)
    check_pixels("x", x)
    x = x.detach()
    if eps == 0:
        return x.clone()
    step = AttackerStep(eps, alpha)
    x_adv = start_point(x, step, random_start=random_start, start=start)
    for iterate in pgd_iterates(model, x, y, x_adv, step=step, steps=steps, loss=loss):
        x_adv = iterate
    return x_adv.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, loss: str = "ce") -> torch.Tensor:
    """Fast gradient sign method: one signed step of size ``eps`` from ``x``, clipped to [0, 1]."""
    return pgd(model, x, y, eps=eps, alpha=eps, steps=1, random_start=False, loss=loss)


def fosc(model: nn.Module | None, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float, *,
         grad: torch.Tensor | None = None, loss: str = "ce") -> torch.Tensor:
    """First-order stationarity condition of Wang et al. (2019; the paper's Eq. 15) per example, L-infinity ball.

    ``FOSC(x_adv) = eps * ||g||_1 - <x_adv - x, g>`` with ``g`` the input gradient of the
    attack loss at ``x_adv`` (computed here in the model's current mode unless ``grad``
    is given). The L1 norm is the dual of the ball's L-infinity norm, so FOSC is ``>= 0``
    inside the ball and ``0`` exactly at a first-order stationary point (the ``[0, 1]``
    box is ignored, as in their definition). ``x`` is the ball's centre, the clean input.
    """
    check_real("eps", eps, minimum=0)
    if x_adv.shape != x.shape:
        raise UserError(f"x_adv and x must have the same shape, got {tuple(x_adv.shape)} and {tuple(x.shape)}")
    g = (input_grad(model, x_adv, y, loss) if grad is None else grad).flatten(1)
    return (eps * g.abs().sum(1) - ((x_adv - x).detach().flatten(1) * g).sum(1)).detach()
