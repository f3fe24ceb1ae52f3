"""ATTA (Zheng et al. 2020): adversarial perturbations stored per training example across epochs."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..core.attacks import pgd
from ..core.maximizers import Maximizer, need_plan
from ..core.schedules import Plan
from ..infra.checks import check_epoch, check_int, check_real
from ..infra.data import CropFlip, crop_flip, put_windows
from ..infra.errors import UserError


class ATTAMaximizer(Maximizer):
    """ATTA (Zheng et al. 2020): adversarial perturbations stored per training example, carried across epochs.

    In every epoch a minibatch's examples start from their stored ``delta`` and take
    ``plan.steps`` PGD steps of ``plan.alpha`` (ATTA-K); the result is stored back and
    trained on. An example without a stored ``delta`` -- at its first visit and after a
    reset -- starts *near the clean input*, at ``x + start_noise * N(0, 1)`` with
    ``start_noise = 0.001`` (their code), not at a random point of the ball: the stored
    perturbations build up their strength over the epochs, and a reset weakens them.
    The store is reset before every epoch whose number counted from 1 is a multiple of
    the period in force (their CIFAR code: with ``reset = 10``, before epochs 10, 20, ...);
    ``reset=None`` never resets (their MNIST code).

    Amata+ATTA (the paper: "reduce reset to be 2 in the first five epochs"): the period
    is ``early_reset`` in the epochs ``t < early_epochs`` (``t`` from 0) and ``reset``
    after; ``early_reset=2, early_epochs=5`` resets before epochs 2 and 4 (from 1), so
    the early perturbations carry at most two epochs of steps. The store is part of
    :meth:`state_dict`, so it survives a resume. The trainer passes the examples'
    dataset indices as ``index`` (``uses_index = True``).

    Under augmentation (``train(..., augment="crop-flip")``) the store follows the
    crops and flips as in their CIFAR code (``adaptive_data_aug.py``): it is kept at the
    padded size (H + 2 pad) x (W + 2 pad); a minibatch's stored perturbations are read
    through the same window and flip as its images (:func:`~amata_lib.infra.data.crop_flip`
    at ``pad=0``), and after the attack each window is written back, mirrored back where
    flipped, while the pixels outside it keep their stored values
    (:func:`~amata_lib.infra.data.put_windows`).

    Differences from the original (original | ours | why), hzzheng93/ATTA
    ``train_atta_mnist.py``, ``train_atta_cifar.py``, ``adv_attack.py``:

    * stores the adversarial image ``x_adv`` | stores ``delta = x_adv - x`` | the same
      without augmentation.
    * the near-clean start is not clipped to ``[0, 1]`` before the first gradient | it is
      projected onto the ball and the box first (:func:`~amata_lib.core.attacks.pgd`'s start) |
      one rule for every start point; the two differ by at most 0.001 per pixel.
    * CIFAR: the stored padded image has a grey (0.5) border and is initialised at
      clean + 0.001 N(0, 1) everywhere | the stored padded ``delta`` is 0 outside the
      windows visited so far, and the clean image's padding is black (zeros, torchvision's
      ``RandomCrop`` default, used by the other references) | a delta of 0 there is the
      clean padding; the 0.001 noise outside visited windows is never trained on before
      the window moves there, when it differs from ours by at most 0.001 per pixel.
    * MNIST: ``--epochs_reset`` is read but never used (no reset) | ``reset`` as given |
      ``reset=None`` reproduces their MNIST code; a period reproduces their CIFAR code.
    * CIFAR (``train_atta_cifar.py``, read at haizhongzheng/ATTA commit aafedf6): the training
      loss is ``(1.0 / batch_size) * CrossEntropyLoss()(...)``, the batch mean divided once more
      by the batch size (64), under SGD at lr 0.1 with weight decay 2e-4 | the plain batch mean of
      the cross-entropy, as for every other method here | their loss gradient is 64 x weaker
      against the weight decay, which SGD adds unscaled (as if the weight decay were
      64 x 2e-4 = 0.0128 at a learning rate of 0.1 / 64 on the loss); not reproduced, so that
      ATTA and Amata+ATTA differ from the other rows of a table only in the inner maximization.
      Their MNIST script takes the plain mean (SGD, no weight decay), as we do.
    """

    name = "atta"
    uses_index = True
    follows_augmentation = True

    def __init__(self, eps: float, reset: int | None = 10, early_reset: int | None = None, early_epochs: int = 0,
                 start_noise: float = 0.001) -> None:
        super().__init__(eps)
        self.reset = None if reset is None else check_int("reset", reset, minimum=1)
        self.early_epochs = check_int("early_epochs", early_epochs, minimum=0)
        if early_reset is not None and self.early_epochs == 0:
            raise UserError(f"early_reset={early_reset!r} has no effect with early_epochs=0; give early_epochs >= 1")
        self.early_reset = self.reset if early_reset is None else check_int("early_reset", early_reset, minimum=1)
        self.start_noise = check_real("start_noise", start_noise, minimum=0)
        self.delta: torch.Tensor | None = None
        self.stored: torch.Tensor | None = None  # which rows of delta hold a perturbation
        self._augmentation: Callable[[], CropFlip | None] | None = None

    def follow_augmentation(self, current: Callable[[], CropFlip | None]) -> None:
        """Keep ``current`` (the epoch's crops and flips) so the store follows them."""
        self._augmentation = current

    def reset_period(self, t: int) -> int | None:
        """The reset period in force in epoch ``t`` (from 0); ``None``: no reset."""
        return self.early_reset if t < self.early_epochs else self.reset

    def resets_before(self, t: int) -> bool:
        """Whether the store is reset before epoch ``t`` (from 0): epoch ``t + 1`` is a multiple of the period."""
        period = self.reset_period(t)
        return period is not None and (t + 1) % period == 0

    def start_epoch(self, t: int, epochs: int) -> None:
        """Clear the store before the epochs :meth:`resets_before` names."""
        check_epoch(t, epochs)
        if self.resets_before(t) and self.stored is not None:
            self.stored.zero_()

    def _grow(self, size: int, like: torch.Tensor, pad: int = 0) -> None:
        if self.delta is None:
            c, h, w = like.shape[1], like.shape[2] + 2 * pad, like.shape[3] + 2 * pad
            shape = (0, c, h, w) if pad else (0, *like.shape[1:])
            self.delta = torch.zeros(shape, dtype=like.dtype, device=like.device)
            self.stored = torch.zeros(0, dtype=torch.bool, device=like.device)
        if size > len(self.delta):
            extra = size - len(self.delta)
            self.delta = torch.cat([self.delta, self.delta.new_zeros((extra, *self.delta.shape[1:]))])
            self.stored = torch.cat([self.stored, self.stored.new_zeros(extra)])

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        plan = need_plan(plan, "ATTAMaximizer")
        if index is None:
            raise UserError("index (the examples' dataset indices) is required by ATTAMaximizer")
        x = x.detach()
        index = torch.as_tensor(index, device=x.device)
        if index.shape != (len(x),):
            raise UserError(f"index must hold one dataset index per example ({len(x)}), got shape "
                             f"{tuple(index.shape)}")
        if index.dtype.is_floating_point or index.dtype == torch.bool or (len(index) and int(index.min()) < 0):
            raise UserError(f"index must hold integer dataset indices >= 0, got dtype {index.dtype}")
        index = index.long()
        crops = self._augmentation() if self._augmentation is not None else None
        self._grow(int(index.max()) + 1 if len(index) else 0, x, crops.pad if crops is not None else 0)
        if crops is not None:
            offsets, flips = crops.of(index)
            stored = crop_flip(self.delta[index], offsets, flips, pad=0, size=tuple(x.shape[2:]))
        else:
            stored = self.delta[index]
        fresh = self.start_noise * torch.randn_like(x)
        keep = self.stored[index].view(-1, *([1] * (x.dim() - 1)))
        x_adv = pgd(model, x, y, eps=self.eps, alpha=plan.alpha, steps=plan.steps,
                    start=x + torch.where(keep, stored, fresh))
        if crops is not None:
            window = self.delta[index]
            put_windows(window, x_adv - x, offsets, flips)
            self.delta[index] = window
        else:
            self.delta[index] = x_adv - x
        self.stored[index] = True
        return x_adv

    def state_dict(self) -> dict:
        """The stored perturbations and which examples have one."""
        return {"delta": self.delta, "stored": self.stored}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.delta, self.stored = state["delta"], state["stored"]
