"""Adversarial training for free (Shafahi et al. 2019) as an own-step maximizer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.maximizers import Maximizer, StepResult, need_plan
from ..core.schedules import Plan


class FreeMaximizer(Maximizer):
    """Adversarial training for free (Shafahi et al. 2019): every minibatch replayed ``m = plan.steps`` times.

    Each replay is one forward+backward pass at ``clip(x + delta, 0, 1)`` whose gradients
    serve twice: the parameter gradient for an optimizer step, and the input gradient
    for ``delta <- clip(delta + plan.alpha * sign(g), -eps, eps)`` (their step is
    ``alpha = eps``). ``delta`` starts at zero and is carried across replays *and*
    minibatches (their warm start); a smaller minibatch uses its first rows. As in
    their code, the carried ``delta`` is clipped to the eps-ball only: the ``[0, 1]``
    box is applied to the forward input (inside the graph, so a pixel held at the box
    gets a zero gradient and its ``delta`` does not move), never stored into ``delta``,
    and a new minibatch starts from the carried rows as they are. The logged loss is
    the mean over the replays.

    Amata+Free: ``Amata(k_min=2, k_max=4, tau=2 * eps)`` gives ``m`` 2 -> 4 and the
    step ``eps`` -> ``eps / 2``, the paper's ImageNet setting. The carried ``delta`` is
    part of :meth:`state_dict`, so a resumed run continues exactly.

    Differences from the original (original | ours | why), mahyarnajibi/FreeAdversarialTraining
    ``main_free.py`` (the official TF code ashafahi/free_adv_train ``free_train.py`` does the same):

    * ``ceil(T / m)`` epochs, lr milestones every ``ceil(30 / m)`` epochs | the epochs the
      trainer is given | we compare methods by passes and time to a robust accuracy, not
      by a fixed budget of clean-epoch equivalents.
    * noise step before ``optimizer.step()`` | after it | the same gradient is used; no effect.
    """

    name = "free"

    def __init__(self, eps: float) -> None:
        super().__init__(eps)
        self.delta: torch.Tensor | None = None

    def step(self, net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor, plan: Plan | None, *, index: torch.Tensor | None = None,
             loss_scale: float = 1.0) -> StepResult:
        """``m`` replays of the minibatch, each one pass, one parameter step and one delta step."""
        plan = need_plan(plan, "FreeMaximizer")
        net.train()
        x = x.detach()
        if self.delta is None or self.delta.shape[1:] != x.shape[1:] or len(self.delta) < len(x):
            self.delta = torch.zeros_like(x)
        delta = self.delta[:len(x)].clone()
        losses = []
        for _ in range(plan.steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(net((x + delta).clamp(0.0, 1.0)), y)
            optimizer.zero_grad(set_to_none=True)
            (loss * loss_scale).backward()
            optimizer.step()
            delta = (delta.detach() + plan.alpha * delta.grad.sign()).clamp(-self.eps, self.eps)
            losses.append(loss.detach())
        self.delta[:len(x)] = delta
        return StepResult(torch.stack(losses).mean(), plan.steps)

    def state_dict(self) -> dict:
        """The carried perturbation."""
        return {"delta": self.delta}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.delta = state["delta"]
