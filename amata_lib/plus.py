"""Amata+: accelerated adversarial training methods whose effort an annealing schedule can set.

The paper's second claim is that Amata combines with other speed-ups. Each method here
is an inner maximizer of the trainer's protocol (see :func:`amata_lib.train`); its
Amata+ variant is the same class driven by an annealing schedule or a weak-early option.

Two kinds of method, both :class:`~amata_lib.maximizers.Maximizer` subclasses:

* **perturb, then step** (:class:`FastMaximizer`, :class:`ATTAMaximizer`): they
  implement ``perturb(model, x, y, plan, index) -> x_adv`` like PGD and keep the base
  class's :meth:`~amata_lib.maximizers.Maximizer.step` (attack, then one parameter step).
* **own step** (:class:`FreeMaximizer`, :class:`YOPOMaximizer`): the method interleaves
  parameter gradients with its attack, so it overrides ``step`` and reports every full
  pass of the minibatch, training included. Their passes run in ``train()`` mode (each
  is a training pass), unlike the attack-only passes of the first kind.

Schedules give ``plan.steps`` and ``plan.alpha``; what they mean per method:

==========  ======================================  =====================================
method      ``plan.steps``                          ``plan.alpha``
==========  ======================================  =====================================
Free        replays ``m`` of each minibatch         signed step of the carried delta
Fast        ignored (one FGSM step)                 FGSM step (Wong et al.: 1.25 eps)
YOPO        full passes ``m`` of YOPO-m-n           step of each cheap first-layer update
ATTA        PGD steps per epoch on the stored delta  PGD step
==========  ======================================  =====================================
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_epoch, check_int, check_real
from ._nn import eval_mode
from .attacks import _input_grad as input_grad
from .attacks import ascent_step, pgd, pgd_start, project
from .data import CropFlip, crop_flip, put_windows
from .errors import UserError
from .maximizers import Maximizer, StepResult, need_plan
from .schedules import Plan


def _delta_step(delta: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """Signed ascent step on a perturbation, kept in the eps-ball and with ``x + delta`` in ``[0, 1]``."""
    return ascent_step(x + delta, grad, x, alpha, eps) - x


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


class FastMaximizer(Maximizer):
    """Fast adversarial training (Wong, Rice & Kolter 2020): FGSM from a random start.

    ``delta ~ U(-eps, eps)``, one signed step of ``plan.alpha`` (they use ``1.25 eps``),
    projection onto the ball and ``[0, 1]``; the trainer trains on the result. One
    extra pass per minibatch.

    Amata+Fast (the paper: "a fixed non-zero initialization" early, the random start
    later): in epochs with ``t / epochs < weak_fraction`` (``t`` from 0) the start is the
    fixed ``delta_0 = fixed_start * eps`` on every pixel. The paper gives neither the
    value nor the switch point; ``fixed_start`` (default 0.5 when ``weak_fraction > 0``)
    and ``weak_fraction`` are our choices. ``weak_fraction = 0`` (default) is plain Fast.
    Before the first :meth:`start_epoch` the start is random.

    Like every perturb-then-step method here, the attack runs with the model in
    ``eval()`` mode (the trainer's rule); Wong et al. attack in train mode, which differs
    for networks with batch norm.
    """

    name = "fast"

    def __init__(self, eps: float, weak_fraction: float = 0.0, fixed_start: float | None = None) -> None:
        super().__init__(eps)
        self.weak_fraction = check_real("weak_fraction", weak_fraction, minimum=0, maximum=1)
        if fixed_start is None:
            fixed_start = 0.5
        elif weak_fraction == 0:
            raise UserError(f"fixed_start={fixed_start!r} has no effect with weak_fraction=0 (plain Fast); "
                            f"give weak_fraction > 0 or drop fixed_start")
        check_real("fixed_start", fixed_start)
        if not -1 <= fixed_start <= 1:
            raise UserError(f"fixed_start must be a number in [-1, 1] (a fraction of eps), got {fixed_start!r}")
        self.fixed_start = float(fixed_start)
        self.weak = False

    def start_epoch(self, t: int, epochs: int) -> None:
        """Weak (fixed) start while ``t / epochs < weak_fraction``, random start after."""
        check_epoch(t, epochs)
        self.weak = t / epochs < self.weak_fraction

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        plan = need_plan(plan, "FastMaximizer")
        start = x + self.fixed_start * self.eps if self.weak else None  # None: pgd's uniform random start
        return pgd(model, x, y, eps=self.eps, alpha=plan.alpha, steps=1, start=start)

    def passes(self, plan: Plan | None) -> int:
        """Extra forward+backward passes per minibatch: one."""
        return 1


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

    def __init__(self, eps: float, noise: float = 2.0, clip: float | None = None) -> None:
        super().__init__(eps)
        self.noise = check_real("noise", noise, minimum=0)
        self.clip = None if clip is None else check_real("clip", clip, minimum=0, strict=True)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        plan = need_plan(plan, "NFGSMMaximizer")
        x = x.detach()
        start = (x + torch.empty_like(x).uniform_(-self.noise * self.eps, self.noise * self.eps)).clamp(0.0, 1.0)
        x_adv = (start + plan.alpha * input_grad(model, start, y, "ce").sign()).clamp(0.0, 1.0)
        if self.clip is not None:
            x_adv = project(x_adv, x, self.clip * self.eps)
        return x_adv.detach()

    def passes(self, plan: Plan | None) -> int:
        """Extra forward+backward passes per minibatch: one."""
        return 1


class EarlyStopRollback:
    """Wong et al.'s early stopping for Fast, as a trainer callback: ``train(..., callback=EarlyStopRollback(...))``.

    After every epoch, PGD-``steps`` (step ``alpha``, default ``eps / 4``, one random start)
    measures the accuracy on one fixed training batch ``(x, y)``. If it lies more than
    ``drop`` (absolute; their 0.2) below the previous epoch's, the model's weights are
    replaced by those saved after the previous epoch and the callback returns ``True``
    (the trainer stops; its checkpoint then holds the restored weights). Each epoch's
    accuracy goes into the record as ``early_stop_acc``; the stopping epoch's record
    gets ``rolled_back: true`` (its ``clean_acc`` and ``robust_acc`` were measured before
    the rollback, on the weights that were dropped). The first epoch cannot stop (their
    previous accuracy starts at 0). The attack uses its own random stream (``seed``),
    so the callback does not change the training trajectory.

    Differences from the original (original | ours | why), locuslab/fast_adversarial
    ``CIFAR10/train_fgsm.py`` (their ``MNIST/train_mnist.py`` has no early stopping):

    * the batch is the epoch's first training minibatch (shuffled: a new one each epoch) |
      a fixed batch given here | the callback does not see the minibatches; fixed is also
      less noisy.
    * the check attacks in train mode (batch-norm batch statistics, running statistics
      updated) | eval mode, weights untouched | the trainer's rule for every attack.
    * no resume | the callback's memory (previous accuracy and weights) is not in the
      trainer's checkpoint: after a resume, the first epoch cannot stop.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float | None = None,
                 steps: int = 5, drop: float = 0.2, seed: int = 0) -> None:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or len(x) != len(y) or not len(x):
            raise UserError("x and y must be tensors holding the same number (>= 1) of examples")
        self.x, self.y = x.detach(), y.detach()
        self.eps = check_real("eps", eps, minimum=0, maximum=1)
        self.alpha = self.eps / 4 if alpha is None else check_real("alpha", alpha, minimum=0)
        self.steps = check_int("steps", steps, minimum=1)
        self.drop = check_real("drop", drop, minimum=0)
        self.seed = check_int("seed", seed, minimum=0)
        self.previous_acc: float | None = None
        self.previous_state: dict | None = None

    def robust_acc(self, model: nn.Module) -> float:
        """PGD accuracy of ``model`` on the fixed batch, in eval mode, with this callback's own seed."""
        with eval_mode(model) as device, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            x, y = self.x.to(device), self.y.to(device)
            x_adv = pgd(model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps)
            with torch.no_grad():
                return float((model(x_adv).argmax(1) == y).float().mean())

    def __call__(self, record: dict, model: nn.Module) -> bool:
        """Measure; roll back and return ``True`` on a drop of more than ``drop``, else remember this epoch."""
        acc = self.robust_acc(model)
        record["early_stop_acc"] = acc
        if self.previous_acc is not None and acc < self.previous_acc - self.drop:
            model.load_state_dict(self.previous_state)
            record["rolled_back"] = True
            return True
        self.previous_acc = acc
        self.previous_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return False


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
    should hold no batch-norm (cheap passes run in train mode). For :class:`LeNet` and
    :class:`DigitsCNN` ``"relu1"`` (conv + ReLU) matches YOPO's MNIST network; for
    :class:`PreActResNet18` ``"conv1"``. The layer must have trainable parameters
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
    * SGD ``1e-2 / K``, momentum 0.9, weight decay 5e-4, batch 256, 41 epochs, SmallCNN with
      dropout | the trainer's settings and model | a protocol choice of each config.

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
    through the same window and flip as its images (:func:`~amata_lib.data.crop_flip`
    at ``pad=0``), and after the attack each window is written back, mirrored back where
    flipped, while the pixels outside it keep their stored values
    (:func:`~amata_lib.data.put_windows`).

    Differences from the original (original | ours | why), hzzheng93/ATTA
    ``train_atta_mnist.py``, ``train_atta_cifar.py``, ``adv_attack.py``:

    * stores the adversarial image ``x_adv`` | stores ``delta = x_adv - x`` | the same
      without augmentation.
    * the near-clean start is not clipped to ``[0, 1]`` before the first gradient | it is
      projected onto the ball and the box first (:func:`~amata_lib.attacks.pgd`'s start) |
      one rule for every start point; the two differ by at most 0.001 per pixel.
    * CIFAR: the stored padded image has a grey (0.5) border and is initialised at
      clean + 0.001 N(0, 1) everywhere | the stored padded ``delta`` is 0 outside the
      windows visited so far, and the clean image's padding is black (zeros, torchvision's
      ``RandomCrop`` default, used by the other references) | a delta of 0 there is the
      clean padding; the 0.001 noise outside visited windows is never trained on before
      the window moves there, when it differs from ours by at most 0.001 per pixel.
    * MNIST: ``--epochs_reset`` is read but never used (no reset) | ``reset`` as given |
      ``reset=None`` reproduces their MNIST code; a period reproduces their CIFAR code.
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
