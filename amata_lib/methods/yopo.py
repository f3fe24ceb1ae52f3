"""YOPO-m-n (Zhang et al. 2019): m full passes per minibatch, n cheap first-layer updates after each."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.attacks import ascent_step, pgd_start
from ..core.maximizers import Maximizer, StepResult, need_plan
from ..core.schedules import Plan
from ..infra.checks import check_choice, check_int
from ..infra.errors import UserError


def _delta_step(delta: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """Signed ascent step on a perturbation, kept in the eps-ball and with ``x + delta`` in ``[0, 1]``."""
    return ascent_step(x + delta, grad, x, alpha, eps) - x


class _EarlyExit(Exception):
    """Raised by a forward hook to stop a forward pass after the first layer."""


class YOPOMaximizer(Maximizer):
    """YOPO-m-n (Zhang et al. 2019): ``m = plan.steps`` full passes, each followed by ``n`` cheap updates.

    Full pass ``j`` (``j = 1..m``): forward at ``x + delta``, backward of the loss. Its
    parameter gradient is accumulated -- averaged over the ``m`` passes
    (``grad_reduction="mean"``, default) or summed (``"sum"``) -- then one optimizer step
    per minibatch; and ``g = dloss/dz`` at the output
    ``z`` of ``layer`` is kept (YOPO's adjoint is ``p = -g``). Cheap update ``s = 1..n``
    after passes ``1..m-1``: with ``g`` held fixed,
    ``delta <- clip(delta + plan.alpha * sign(grad_delta <g, f(x + delta)>))`` where ``f``
    is the network up to ``layer`` (a forward and backward through that part only). At
    the point where ``g`` was taken, ``grad_delta <g, f>`` *is* the full input gradient
    (chain rule); later cheap steps reuse the stale ``g``. ``delta`` starts uniformly in
    the ball for each minibatch. The ``n`` updates after the last full pass would only
    feed YOPO's extra Hamiltonian update of the first layer's weights, which is not
    reproduced (those weights get the ordinary summed gradient), so they are skipped.

    ``layer`` names the submodule whose output is ``z`` (``model.get_submodule``); it
    should hold no batch-norm (cheap passes run in train mode). For :class:`~amata_lib.core.models.LeNet` and
    :class:`~amata_lib.core.models.DigitsCNN` ``"relu1"`` (conv + ReLU) matches YOPO's MNIST network; for
    :class:`~amata_lib.core.models.PreActResNet18` ``"conv1"``. The layer must have trainable parameters
    before or in it (its output needs a gradient).

    Gradient reduction. YOPO's MNIST code (``experiments/MNIST/YOPO-5-10/config.py``) sums
    the ``m`` gradients in ``.grad`` and sets its SGD learning rate to ``1e-2 / K`` with
    ``K = m`` (``0.2 / K`` on CIFAR-10): for plain SGD that is the mean at learning rate
    0.01. ``"mean"`` (default) says so directly and keeps the step size independent of
    ``m_t`` under Amata+YOPO (with a fixed lr, the sum would multiply it by ``m_t``);
    ``"sum"`` with ``lr / m`` reproduces their update exactly for SGD without weight
    decay (their weight decay ``5e-4`` acts once per step on the sum, i.e. ``m`` times
    weaker relative to the gradient than on the mean). With Adam, nearly invariant to
    the gradient's scale, the two agree up to Adam's ``eps``. Measured on ``digits``:
    YOPO-5-3 at SGD lr 0.05, momentum 0.9 diverges with the sum and trains with the mean.

    Differences from the original (original | ours | why),
    a1600012888/YOPO-You-Only-Propagate-Once ``experiments/MNIST/YOPO-5-10/training_function.py``:

    * the first layer's weights get the Hamiltonian gradient at the updated ``delta``, from
      ``n`` cheap steps after every pass including the last, with an optimizer and lr
      milestones of their own | the ordinary gradient of the ``m`` passes, no cheap steps
      after the last | not reproduced; our ``passes`` and ``layer_passes`` count what we run.
    * the first full pass sees ``x + delta`` unclipped to ``[0, 1]`` | the start is projected
      onto the box | one rule for every start point.
    * their MNIST setup: SGD at ``1e-2 / K``, momentum 0.9, weight decay 5e-4, batch 256, 41
      epochs, SmallCNN with dropout | the config's outer optimiser, batch, epochs and model:
      ``mnist-plus`` trains YOPO with Adam at lr 1e-3, batch 64, no weight decay, 10 epochs,
      LeNet (``digits-plus``: SGD 0.05, momentum 0.9, weight decay 5e-4, batch 128, 15 epochs,
      DigitsCNN) | every row of a table shares one optimiser, batch and length (``mnist-plus``
      those of ``mnist-baselines``, so that its PGD-10 is the same run); so our YOPO numbers are
      not those of its authors' setup, and their lr-per-``K`` rule is not used (under Adam the
      sum and the mean of the ``m`` gradients nearly agree, see above).

    Amata+YOPO (the paper: raise ``K``, lower the step): ``Amata(k_min, k_max, tau)`` gives
    ``m`` rising and ``alpha = tau / m`` falling. :meth:`passes` counts the ``m`` full
    passes; the ``(m - 1) * n`` cheap first-layer passes are in ``layer_passes`` (the
    trainer adds them up in the history).
    """

    name = "yopo"
    counts_layer_passes = True

    GRAD_REDUCTIONS = ("sum", "mean")

    def __init__(self, eps: float, n: int = 10, layer: str = "relu1", grad_reduction: str = "mean") -> None:
        super().__init__(eps)
        self.n = check_int("n", n, minimum=1)
        self.grad_reduction = check_choice("grad_reduction", grad_reduction, self.GRAD_REDUCTIONS)
        if not isinstance(layer, str) or not layer:
            raise UserError(f"layer must be the name of a submodule, got {layer!r}")
        self.layer = layer

    def _submodule(self, model: nn.Module) -> nn.Module:
        try:
            return model.get_submodule(self.layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n]
            raise UserError(f"layer {self.layer!r} is not a submodule of {type(model).__name__}; "
                             f"its submodules: {names}") from None

    def check_model(self, model: nn.Module) -> None:
        """Raise UserError unless ``layer`` names a submodule of ``model``."""
        self._submodule(model)

    def first_layer(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``f(x)``: the network run up to the output of ``layer`` only."""
        out: list[torch.Tensor] = []

        def stop(_module, _inputs, output):
            out.append(output)
            raise _EarlyExit

        handle = self._submodule(model).register_forward_hook(stop)
        try:
            model(x)
        except _EarlyExit:
            pass
        finally:
            handle.remove()
        if not out:
            raise UserError(f"layer {self.layer!r} was not called by {type(model).__name__}.forward")
        return out[0]

    def full_pass(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One full forward+backward pass at ``x + delta``: the input gradient and ``g = dloss/dz`` at the layer.

        The loss is the summed cross-entropy; ``g`` is what :meth:`cheap_grad` holds fixed.
        The parameters' ``.grad`` are left untouched (:func:`torch.autograd.grad`).
        """
        captured: list[torch.Tensor] = []
        handle = self._submodule(model).register_forward_hook(lambda _m, _i, out: captured.append(out))
        with torch.enable_grad():
            d = delta.detach().requires_grad_(True)
            try:
                loss = F.cross_entropy(model(x + d), y, reduction="sum")
            finally:
                handle.remove()
            grad_x, g = torch.autograd.grad(loss, [d, captured[0]])
        return grad_x, g

    def cheap_grad(self, model: nn.Module, x: torch.Tensor, delta: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``grad_delta <g, f(x + delta)>``: the input gradient through the first layer with ``g`` held fixed."""
        with torch.enable_grad():
            delta = delta.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad((self.first_layer(model, x + delta) * g).sum(), delta)
        return grad

    def step(self, net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor, plan: Plan | None, *, index: torch.Tensor | None = None,
             loss_scale: float = 1.0) -> StepResult:
        """``m`` full passes (summed parameter gradient, one step), ``n`` cheap delta updates after all but the last."""
        plan = need_plan(plan, "YOPOMaximizer")
        net.train()
        x = x.detach()
        layer = self._submodule(model)
        captured: list[torch.Tensor] = []

        def keep(_module, _inputs, output):
            if not output.requires_grad:
                raise UserError(f"layer {self.layer!r} gives an output without gradient (no trainable "
                                 f"parameters up to it); choose a layer such as a convolution")
            output.retain_grad()
            captured.append(output)

        delta = pgd_start(x, self.eps) - x
        optimizer.zero_grad(set_to_none=True)
        losses = []
        for j in range(plan.steps):
            captured.clear()
            handle = layer.register_forward_hook(keep)
            try:
                loss = F.cross_entropy(net(x + delta), y)
            finally:
                handle.remove()
            weight = loss_scale if self.grad_reduction == "sum" else loss_scale / plan.steps
            (loss * weight).backward()  # parameter gradients add up over the m passes
            losses.append(loss.detach())
            if j == plan.steps - 1:
                break
            g = captured[0].grad.detach()  # a positive multiple of dloss/dz: signs are unaffected
            for _ in range(self.n):
                delta = _delta_step(delta, self.cheap_grad(model, x, delta, g), x, plan.alpha, self.eps)
        optimizer.step()
        return StepResult(torch.stack(losses).mean(), plan.steps, (plan.steps - 1) * self.n)
