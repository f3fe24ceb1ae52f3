"""Fast adversarial training (Wong, Rice & Kolter 2020): FGSM from a random start, and its early stopping."""
from __future__ import annotations

import torch
from torch import nn

from ..core.attacks import pgd
from ..core.maximizers import Maximizer, need_plan
from ..core.schedules import Plan
from ..infra.checks import check_epoch, check_int, check_real
from ..infra.errors import UserError
from ..infra.nn import eval_mode


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
