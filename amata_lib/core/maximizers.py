"""Inner maximizers: given a clean batch and an epoch's :class:`~amata_lib.core.schedules.Plan`,
produce the batch that the outer (parameter) step trains on -- and take that step.

The trainer combines a schedule (which plan, when) with a :class:`Maximizer` (how to
use the plan). A maximizer's one entry point per minibatch is :meth:`Maximizer.step`:
by default it attacks in ``eval()`` mode (:meth:`Maximizer.perturb`), then takes one
cross-entropy step in ``train()`` mode, and returns the loss and the passes it spent.
Methods that interleave attack and training (Free, YOPO in :mod:`amata_lib.methods`)
override :meth:`~Maximizer.step` itself. ERM is the maximizer that returns the clean batch.

A new method is a subclass that overrides one or two methods::

    class NoisyFGSM(Maximizer):
        # FGSM from a Gaussian start: one ascent step of plan.alpha
        name = "noisy-fgsm"

        def perturb(self, model, x, y, plan, index=None):
            start = x + 0.1 * self.eps * torch.randn_like(x)
            return pgd(model, x, y, eps=self.eps, alpha=plan.alpha, steps=1, start=start)

        def passes(self, plan):
            return 1

Early-stopping maximizers (:class:`FOSCMaximizer`, :class:`FATMaximizer`) run at most
``plan.steps`` PGD steps but stop each example on its own criterion. Pass accounting:
iteration ``k`` computes one forward+backward pass on the examples still active at its
start; a pass on a fraction ``f`` of the batch counts as ``f``. Examples that stop at
iteration ``k`` are part of that pass (their criterion needs its gradient or logits),
so the count is the work really done, and never exceeds ``plan.steps``.
"""
from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..infra.checks import check_bool, check_choice, check_epoch, check_real
from ..infra.errors import CheckpointError, UserError
from .attacks import LOSSES, AttackerStep, Iterate, NoisyStep, fosc, pgd, pgd_iterates, start_point
from .schedules import Plan


class StepResult(NamedTuple):
    """What one minibatch cost: the training loss, full forward+backward passes, first-layer-only passes."""

    loss: torch.Tensor
    passes: float
    layer_passes: float = 0.0


def need_plan(plan: Plan | None, who: str) -> Plan:
    """``plan`` itself; a clear error when an adversarial method gets none."""
    if not isinstance(plan, Plan):
        raise UserError(f"plan must be a Plan for {who}, got {plan!r}")
    return plan


def step_once(maximizer: "Maximizer", plan: Plan | None, build_model: Any, x: torch.Tensor, y: torch.Tensor, *,
              lr: float = 0.05, momentum: float = 0.9, seed: int = 0) -> StepResult:
    """One training step of ``maximizer`` on the minibatch ``(x, y)``: a fresh ``build_model()``, a fresh SGD.

    For counting what one minibatch of a method costs (its :class:`StepResult`); the
    examples' indices are ``0 .. len(x) - 1`` (for ATTA's store).
    """
    torch.manual_seed(seed)
    net = build_model()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    return maximizer.step(net, net, optimizer, x, y, plan, index=torch.arange(len(x)))


class Maximizer:
    """Base class of inner maximizers: explicit defaults for everything the trainer calls.

    Subclasses set ``name`` and implement :meth:`perturb` and :meth:`passes`
    (perturb-then-step methods), or override :meth:`step` (own-step methods).
    Constructor arguments are stored under their own names, so :meth:`settings` can
    describe the method for a run's fingerprint.

    Class attributes: ``uses_index`` -- :meth:`perturb` needs the examples' dataset
    indices (per-example state; ``TensorDataset`` and one process only);
    ``counts_layer_passes`` -- :meth:`step` reports first-layer-only passes (YOPO).
    """

    name = "maximizer"
    uses_index = False
    counts_layer_passes = False
    follows_augmentation = False

    def __init__(self, eps: float) -> None:
        self.eps = check_real("eps", eps, minimum=0, maximum=1)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        """The adversarial batch for ``(x, y)`` under ``plan`` (``index``: dataset indices, if known)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither perturb nor step")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None,
                 index: torch.Tensor | None = None) -> torch.Tensor:
        return self.perturb(model, x, y, plan, index)

    def passes(self, plan: Plan | None) -> float:
        """Forward+backward passes the last :meth:`perturb` spent (the training pass not included)."""
        return 0 if plan is None else plan.steps

    def step(self, net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor, plan: Plan | None, *, index: torch.Tensor | None = None,
             loss_scale: float = 1.0) -> StepResult:
        """Attack in ``eval()`` mode, then one cross-entropy step in ``train()`` mode (Algorithm 1, lines 4-8).

        ``net`` is the model as trained (wrapped by DDP under ``torchrun``), ``model`` the
        bare one that attacks use; ``loss_scale`` weights this shard's loss (DDP).
        """
        model.eval()
        x_adv = self.perturb(model, x, y, plan, index)
        net.train()
        loss = F.cross_entropy(net(x_adv), y)
        optimizer.zero_grad(set_to_none=True)
        (loss * loss_scale).backward()
        optimizer.step()
        return StepResult(loss.detach(), self.passes(plan) + 1)

    def start_epoch(self, t: int, epochs: int) -> None:
        """Called before epoch ``t`` (from 0) of ``epochs``; for methods whose state follows the epoch."""
        check_epoch(t, epochs)

    def follow_augmentation(self, current: Any) -> None:
        """Receive, once before augmented training, ``current()`` -> the epoch's crops and flips.

        Methods with per-example state set ``follows_augmentation = True`` and keep
        ``current`` (see :data:`amata_lib.core.training.FOLLOW_AUGMENTATION`); the default ignores it.
        """

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`UserError` if this method cannot run on ``model`` (checked before training)."""

    def state_dict(self) -> dict:
        """State carried across minibatches or epochs (saved in checkpoints); none by default."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise CheckpointError(f"the checkpoint holds maximizer state ({sorted(state)}) but "
                                  f"{type(self).__name__} keeps none; resume with the same maximizer")

    def settings(self) -> dict[str, Any]:
        """``name`` and every constructor argument: what defines this method in a run."""
        params = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {"name": self.name, **{p: getattr(self, p) for p in params}}


class Clean(Maximizer):
    """ERM: train on the clean batch; costs no extra pass."""

    name = "erm"

    def __init__(self) -> None:
        self.eps = 0.0

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        return x

    def passes(self, plan: Plan | None) -> int:
        """Extra forward+backward passes per minibatch (none)."""
        return 0


class PGDMaximizer(Maximizer):
    """PGD with the plan's ``steps`` and ``alpha`` inside an L-infinity ball of radius ``eps``.

    ``random_start=True`` (default) starts from a uniform point in the ball as in
    Madry et al.; the paper's Algorithm 1 as printed starts at the clean input,
    which ``random_start=False`` reproduces.
    """

    name = "pgd"

    def __init__(self, eps: float, random_start: bool = True, loss: str = "ce") -> None:
        super().__init__(eps)
        self.random_start = check_bool("random_start", random_start)
        self.loss = check_choice("loss", loss, LOSSES)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        plan = need_plan(plan, "PGDMaximizer")
        return pgd(model, x, y, eps=self.eps, alpha=plan.alpha, steps=plan.steps,
                   random_start=self.random_start, loss=self.loss)


class EarlyStopPGD(Maximizer):
    """PGD on the engine of :mod:`amata_lib.core.attacks`, in which each example leaves the batch on a rule.

    Subclasses implement ``stop`` (``Iterate -> bool mask`` over the moving
    examples: which stop before iteration ``it.k``'s step, ``k`` from 0) and may override
    :meth:`reset` (per-call state from the start point) and :meth:`attacker_step` (the
    step, e.g. FAT's noise). After a call, :meth:`passes` gives the work spent: each
    pass on a fraction ``f`` of the batch counts ``f``, the stopping pass included.
    """

    def __init__(self, eps: float, random_start: bool, loss: str) -> None:
        super().__init__(eps)
        self.random_start = check_bool("random_start", random_start)
        self.loss = check_choice("loss", loss, LOSSES)
        self._passes = 0.0

    def attacker_step(self, alpha: float) -> AttackerStep:
        """The ascent step of the active examples: Eq. 2's by default."""
        return AttackerStep(self.eps, alpha)

    def reset(self, x_start: torch.Tensor) -> None:
        """Per-call state of the stopping rule (none by default)."""

    def stop(self, it: Iterate) -> torch.Tensor:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        plan = need_plan(plan, type(self).__name__)
        x = x.detach()
        n = len(x)
        self._passes = 0.0
        if self.eps == 0 or n == 0:
            return x.clone()
        step = self.attacker_step(plan.alpha)
        x_adv = start_point(x, step, random_start=self.random_start)
        self.reset(x_adv.clone())

        def counted(it: Iterate) -> torch.Tensor:
            self._passes += len(it.rows) / n
            return self.stop(it)

        for iterate in pgd_iterates(model, x, y, x_adv, step=step, steps=plan.steps, loss=self.loss, stop=counted):
            x_adv = iterate
        return x_adv.detach()

    def passes(self, plan: Plan | None) -> float:
        """Forward+backward passes spent by the last call (a pass on a fraction ``f`` of the batch counts ``f``)."""
        return self._passes


class FOSCMaximizer(EarlyStopPGD):
    """Dynamic adversarial training of Wang et al. (2019): PGD stopped by FOSC, as their released code runs it.

    An example whose :func:`fosc` value is ``<= c_t`` stops (at most ``plan.steps``
    steps). :meth:`start_epoch` sets the threshold by their linear rule
    ``c_t = max(c_max - t * c_max / T', 0)`` with ``T' = t_prime_fraction * epochs``
    (``t`` counted from 0): a loose criterion (weak attack) early, plain PGD
    (``c_t = 0``) from epoch ``T'`` on. Before the first :meth:`start_epoch`, ``c_t = c_max``;
    the attribute ``c_t`` may also be set directly.

    The defaults follow YisenWang/dynamic_adv_training (``pgd_attack.py``,
    ``train_models.py``): FOSC is measured from the random start point
    (``fosc_from="start"``: ``eps * ||g||_1 - <g, x_k - x_0>``, which can be negative), the
    first step is always taken (``first_step=True``; the check comes before every later
    step, i.e. after every step but the last, where theirs only logs it), ``T' = 100`` of
    their 120 epochs (``t_prime_fraction = 100 / 120``), and from the second epoch on
    (``t >= 1``) the outer loss weights each example by its own cross-entropy at its
    adversarial point (``weight_loss=True``: ``mean_i(CE_i.detach() * CE_i)``, their
    Keras ``sample_weight``). ``fosc_from="clean"``, ``first_step=False``,
    ``t_prime_fraction=0.8``, ``weight_loss=False`` give the paper's Algorithm 1 as
    printed (FOSC from the ball's centre, Eq. 15, which is ``>= 0``; a check before every
    step; ``T' = 0.8 T``; an unweighted loss).

    Remaining differences (original | ours | why), ``train_models.py``:

    * the weights come from ``model.predict`` (inference mode, an extra forward pass) |
      from the training pass's own per-example loss, detached | no extra pass; the same
      for networks without dropout or batch norm (LeNet, DigitsCNN).
    * the logged loss is the weighted one | ``train_loss`` stays the plain mean CE | the
      histories of all methods stay comparable.
    * ``c_max = 0.5`` tuned on CIFAR-10 (3072-dimensional L1 norm) | 0.5 by default on every
      data set | not tuned here; FOSC's scale depends on the input dimension.
    * Keras SGD with per-iteration lr decay, softmax-output loss | the trainer's optimiser |
      a protocol choice of each config.

    Parameters
    ----------
    eps : float
        Radius of the L-infinity ball.
    c_max : float
        Initial FOSC threshold (their CIFAR-10 value 0.5).
    t_prime_fraction : float
        Fraction of training over which ``c_t`` decays to 0 (their ``T' = 100 / 120``).
    random_start : bool
        ``True`` (default, as in their released code) starts uniformly in the ball;
        ``False`` starts at the clean input.
    loss : {"ce", "cw"}
        Loss ascended and differentiated for FOSC.
    fosc_from : {"start", "clean"}
        The point FOSC is measured from: the start point (their code) or the clean input.
    first_step : bool
        Take the first step without a check (their code).
    weight_loss : bool
        Weight the outer loss per example by its CE from epoch ``t = 1`` on (their code).
    """

    name = "fosc"
    FOSC_FROM = ("start", "clean")

    def __init__(self, eps: float, c_max: float = 0.5, t_prime_fraction: float = 100 / 120,
                 random_start: bool = True, loss: str = "ce", fosc_from: str = "start", first_step: bool = True,
                 weight_loss: bool = True) -> None:
        super().__init__(eps, random_start, loss)
        check_real("c_max", c_max, minimum=0)
        self.t_prime_fraction = check_real("t_prime_fraction", t_prime_fraction, minimum=0, strict=True,
                                           maximum=1)
        self.c_max = float(c_max)
        self.c_t = self.c_max
        self.fosc_from = check_choice("fosc_from", fosc_from, self.FOSC_FROM)
        self.first_step = check_bool("first_step", first_step)
        self.weight_loss = check_bool("weight_loss", weight_loss)
        self.weighted = False  # whether this epoch's loss is weighted (set by start_epoch)

    def start_epoch(self, t: int, epochs: int) -> None:
        """Set ``c_t = max(c_max - t * c_max / (t_prime_fraction * epochs), 0)``; weight the loss from ``t = 1``."""
        check_epoch(t, epochs)
        self.c_t = max(self.c_max - t * self.c_max / (self.t_prime_fraction * epochs), 0.0)
        self.weighted = self.weight_loss and t >= 1

    def reset(self, x_start: torch.Tensor) -> None:
        self._start = x_start

    def stop(self, it: Iterate) -> torch.Tensor:
        if it.k == 0 and self.first_step:
            return torch.zeros(len(it.rows), dtype=torch.bool, device=it.rows.device)
        centre = self._start[it.rows] if self.fosc_from == "start" else it.x
        return fosc(None, it.x_adv, centre, it.y, self.eps, grad=it.grad) <= self.c_t

    def step(self, net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor, plan: Plan | None, *, index: torch.Tensor | None = None,
             loss_scale: float = 1.0) -> StepResult:
        """The base class's step; in weighted epochs the loss is ``mean_i(CE_i.detach() * CE_i)``."""
        if not self.weighted:
            return super().step(net, model, optimizer, x, y, plan, index=index, loss_scale=loss_scale)
        model.eval()
        x_adv = self.perturb(model, x, y, plan, index)
        net.train()
        losses = F.cross_entropy(net(x_adv), y, reduction="none")
        optimizer.zero_grad(set_to_none=True)
        ((losses.detach() * losses).mean() * loss_scale).backward()
        optimizer.step()
        return StepResult(losses.detach().mean(), self.passes(plan) + 1)


class FATMaximizer(EarlyStopPGD):
    """Friendly adversarial training of Zhang et al. (2020): early-stopped PGD-K-tau.

    Before each ascent step an example is checked at its current point: if it is
    misclassified and its budget is 0 it stops; if misclassified with budget left,
    the budget drops by one and it steps on; otherwise it steps on (their Algorithm 1).
    Each example starts with the epoch's budget ``budget_t`` (their ``tau``; named
    apart from Amata's travel ``tau``), so ``0`` stops at the first misclassified
    iterate and a large budget is plain PGD-K.

    Parameters
    ----------
    eps : float
        Radius of the L-infinity ball.
    budget : int or "dynamic"
        Their ``tau`` >= 0 (default 0, the paper's main setting), or ``"dynamic"``:
        their schedule 0 up to epoch 50, 1 up to 90, 2 after (of 120), applied
        to the fraction ``(t + 1) / epochs`` by :meth:`start_epoch` (``0`` until called).
    random_start : bool
        ``True`` (default, the uniform start of their released code) or ``False``
        (start at the clean input).
    loss : {"ce", "cw"}
        Loss ascended.
    omega : float
        Standard deviation of the Gaussian noise added to every step before the
        projection (their ``omega``, default 0.001): ``x + alpha * sign(g) + omega * N(0, 1)``;
        ``0`` gives plain PGD steps.

    Notes
    -----
    Remaining differences (original | ours | why), zjfheart/Friendly-Adversarial-Training
    ``earlystop.py``, ``FAT.py``:

    * passes: the examples that stop at an iteration are not counted | counted (their
      gradient was computed) | the count is the work done.
    * the dynamic budget by 1-based epoch thresholds 50 and 90 of 120 | the same thresholds
      as fractions of ``epochs`` | the same for 120 epochs.
    """

    name = "fat"
    DYNAMIC_BUDGET = ((50 / 120, 0), (90 / 120, 1), (1.0, 2))

    def __init__(self, eps: float, budget: int | str = 0, random_start: bool = True, loss: str = "ce",
                 omega: float = 0.001) -> None:
        super().__init__(eps, random_start, loss)
        self.omega = check_real("omega", omega, minimum=0)
        ok_int = not isinstance(budget, bool) and isinstance(budget, int) and budget >= 0
        if not ok_int and budget != "dynamic":
            raise UserError(f"budget must be an integer >= 0 or 'dynamic', got {budget!r}")
        self.budget = budget
        self.budget_t = 0 if budget == "dynamic" else budget

    def start_epoch(self, t: int, epochs: int) -> None:
        """For ``budget="dynamic"`` set ``budget_t`` from the training fraction ``(t + 1) / epochs``."""
        check_epoch(t, epochs)
        if self.budget == "dynamic":
            self.budget_t = next(b for frac, b in self.DYNAMIC_BUDGET if (t + 1) / epochs <= frac)

    def reset(self, x_start: torch.Tensor) -> None:
        self._budget = torch.full((len(x_start),), self.budget_t, dtype=torch.long, device=x_start.device)

    def attacker_step(self, alpha: float) -> AttackerStep:
        """``x + alpha * sign(grad) + omega * N(0, 1)``, projected onto the ball and ``[0, 1]``."""
        return NoisyStep(self.eps, alpha, self.omega)

    def stop(self, it: Iterate) -> torch.Tensor:
        wrong = it.logits.argmax(1) != it.y
        stop = wrong & (self._budget[it.rows] == 0)
        self._budget[it.rows[wrong & ~stop]] -= 1
        return stop
