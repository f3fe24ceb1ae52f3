"""N-FGSM (de Jorge et al., NeurIPS 2022): one FGSM step from strong noise, not projected back to the ball."""
from __future__ import annotations

import torch
from torch import nn

from ..core.attacks import AttackerStep, pgd_iterates, project, start_point
from ..core.maximizers import Maximizer, need_plan
from ..core.schedules import Plan
from ..infra.checks import check_real


class NFGSMMaximizer(Maximizer):
    """N-FGSM (de Jorge et al., NeurIPS 2022): one FGSM step from strong noise, not projected back.

    ``x_0 = clip(x + eta, 0, 1)`` with ``eta ~ U(-noise * eps, noise * eps)`` per pixel
    (their ``k = 2``), then ``x_adv = clip(x_0 + plan.alpha * sign(g), 0, 1)`` with ``g`` the
    input gradient of the cross-entropy at ``x_0`` (their step ``alpha = eps``). The
    perturbation is *not* clipped to the eps-ball (their default ``--clip -1``), so it can
    reach ``(noise + 1) * eps``; ``clip`` (a multiple of eps) clips it as in their option.
    One extra pass per minibatch, as Fast.

    Differences from the original (original | ours | why), pdejorge/N-FGSM ``train.py``:

    * the attack pass runs in ``train()`` mode (batch-norm batch statistics, running
      statistics updated by the attack pass) | ``eval()`` mode, as every perturb-then-step
      method here | the trainer's rule; identical for networks without batch norm
      (``mnist_small``, ``digits_cnn``, ``lenet``).
    * gradient of the batch-mean CE | of the summed CE | the same sign, the same step.
    * SGD with a cyclic rate peaking at ``lr_max = 0.2`` halfway, 30 epochs (CIFAR-10) |
      the config's optimiser and rate | a protocol choice that every row of a config
      shares; each config says which.
    * SVHN: eps and the step ramped up over the first 5 epochs | no ramp | not used on
      our data sets; their code has no MNIST or digits setting, so their CIFAR-10
      defaults ``k = 2``, ``alpha = eps`` are ours.
    """

    name = "n-fgsm"

    class Step(AttackerStep):
        """N-FGSM's start (noise ``noise * eps`` wide, clipped into ``[0, 1]``) and step (into ``[0, 1]`` only)."""

        def __init__(self, eps: float, alpha: float, noise: float, clip: float | None) -> None:
            super().__init__(eps, alpha)
            self.noise, self.clip = noise, clip

        def random_start(self, x: torch.Tensor) -> torch.Tensor:
            return (x + torch.empty_like(x).uniform_(-self.noise * self.eps, self.noise * self.eps)).clamp(0.0, 1.0)

        def step(self, x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            out = (x_adv + self.alpha * grad.sign()).clamp(0.0, 1.0)
            return out if self.clip is None else project(out, x, self.clip * self.eps)

    def __init__(self, eps: float, noise: float = 2.0, clip: float | None = None) -> None:
        super().__init__(eps)
        self.noise = check_real("noise", noise, minimum=0)
        self.clip = None if clip is None else check_real("clip", clip, minimum=0, strict=True)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        plan = need_plan(plan, "NFGSMMaximizer")
        x = x.detach()
        step = self.Step(self.eps, plan.alpha, self.noise, self.clip)
        (x_adv,) = pgd_iterates(model, x, y, start_point(x, step), step=step, steps=1)
        return x_adv.detach()

    def passes(self, plan: Plan | None) -> int:
        """Extra forward+backward passes per minibatch: one."""
        return 1
