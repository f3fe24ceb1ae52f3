"""Inner maximizers: given a clean batch and an epoch's :class:`~amata_lib.schedules.Plan`,
produce the batch that the outer (parameter) step trains on.

The trainer combines a schedule (which plan, when) with a maximizer (how to use the
plan). ERM is the maximizer that returns the clean batch.

Early-stopping maximizers (:class:`FOSCMaximizer`, :class:`FATMaximizer`) run at most
``plan.steps`` PGD steps but stop each example on its own criterion. Pass accounting:
iteration ``k`` computes one forward+backward pass on the examples still active at its
start; a pass on a fraction ``f`` of the batch counts as ``f``. Examples that stop at
iteration ``k`` are part of that pass (their criterion needs its gradient or logits),
so the count is the work really done, and never exceeds ``plan.steps``.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from ._checks import check_epoch as _check_epoch
from ._checks import check_real
from .attacks import LOSSES, _input_grad, attack_loss, pgd, project
from .plus import ATTAMaximizer, FastMaximizer, FreeMaximizer, YOPOMaximizer
from .schedules import Plan


class Clean:
    """ERM: train on the clean batch; costs no extra pass."""

    name = "erm"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None) -> torch.Tensor:
        return x

    def passes(self, plan: Plan | None) -> int:
        """Extra forward+backward passes per minibatch (none)."""
        return 0


def _check_eps_loss(eps: float, loss: str) -> float:
    check_real("eps", eps, minimum=0)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return float(eps)


class PGDMaximizer:
    """PGD with the plan's ``steps`` and ``alpha`` inside an L-infinity ball of radius ``eps``.

    ``random_start=True`` (default) starts from a uniform point in the ball as in
    Madry et al.; the paper's Algorithm 1 as printed starts at the clean input,
    which ``random_start=False`` reproduces.
    """

    name = "pgd"

    def __init__(self, eps: float, random_start: bool = True, loss: str = "ce") -> None:
        self.eps = _check_eps_loss(eps, loss)
        self.random_start = random_start
        self.loss = loss

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None) -> torch.Tensor:
        if plan is None:
            raise ValueError("plan must be a Plan for PGDMaximizer, got None")
        return pgd(model, x, y, eps=self.eps, alpha=plan.alpha, steps=plan.steps,
                   random_start=self.random_start, loss=self.loss)

    def passes(self, plan: Plan | None) -> int:
        """Extra forward+backward passes per minibatch: one per ascent step."""
        return 0 if plan is None else plan.steps


def fosc(x_adv: torch.Tensor, x: torch.Tensor, grad: torch.Tensor, eps: float) -> torch.Tensor:
    """First-order stationarity condition of Wang et al. (2019), per example, for the L-infinity ball.

    ``FOSC(x_adv) = eps * ||g||_1 - <x_adv - x, g>`` with ``g`` the input gradient of the
    attack loss at ``x_adv``. It is ``>= 0`` inside the ball and ``0`` exactly at a
    first-order stationary point of the inner maximization (the ``[0, 1]`` box is ignored,
    as in their definition).
    """
    g = grad.flatten(1)
    return eps * g.abs().sum(1) - ((x_adv - x).flatten(1) * g).sum(1)


def _logits_and_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str):
    """Logits and input gradient of the summed attack loss from one forward+backward pass."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad(attack_loss(logits, y, loss).sum(), x)
    return logits.detach(), grad


class _EarlyStopPGD:
    """PGD from :mod:`amata_lib.attacks` in which each example leaves the batch on a criterion.

    Subclasses implement ``_reset(n, device)`` (per-call state) and
    ``_stop(x_adv, x, y, logits, grad, idx) -> bool mask`` (which active examples stop
    before this iteration's step). After a call, ``steps_taken`` holds each example's
    number of ascent steps and :meth:`passes` the work spent.
    """

    def __init__(self, eps: float, random_start: bool, loss: str) -> None:
        self.eps = _check_eps_loss(eps, loss)
        self.random_start = bool(random_start)
        self.loss = loss
        self._passes = 0.0
        self.steps_taken = torch.zeros(0, dtype=torch.long)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan | None) -> torch.Tensor:
        if plan is None:
            raise ValueError(f"plan must be a Plan for {type(self).__name__}, got None")
        x = x.detach()
        n = len(x)
        self._passes = 0.0
        self.steps_taken = torch.zeros(n, dtype=torch.long, device=x.device)
        if self.eps == 0 or n == 0:
            return x.clone()
        self._reset(n, x.device)
        x_adv = pgd(model, x, y, eps=self.eps, alpha=0.0, steps=0, random_start=self.random_start)  # the start
        active = torch.arange(n, device=x.device)
        for _ in range(plan.steps):
            if len(active) == 0:
                break
            xa, x0, ya = x_adv[active], x[active], y[active]
            logits, grad = self._gradient(model, xa, ya)
            self._passes += len(active) / n
            go = ~self._stop(xa, x0, ya, logits, grad, active)
            active = active[go]
            x_adv[active] = project(xa[go] + plan.alpha * grad[go].sign(), x0[go], self.eps)
            self.steps_taken[active] += 1
        return x_adv.detach()

    def _reset(self, n: int, device: torch.device) -> None:
        """Per-call state of the stopping rule (none by default)."""

    def _gradient(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        return _logits_and_grad(model, x, y, self.loss)

    def passes(self, plan: Plan | None) -> float:
        """Forward+backward passes spent by the last call (a pass on a fraction ``f`` of the batch counts ``f``)."""
        return self._passes


class FOSCMaximizer(_EarlyStopPGD):
    """Dynamic adversarial training of Wang et al. (2019, Algorithm 1): PGD stopped by FOSC.

    Before each ascent step, an example whose :func:`fosc` value is ``<= c_t`` stops
    (at most ``plan.steps`` steps). :meth:`start_epoch` sets the threshold by their
    linear rule ``c_t = max(c_max - t * c_max / T', 0)`` with ``T' = t_prime_fraction *
    epochs`` (``t`` counted from 0): a loose criterion (weak attack) early, plain PGD
    (``c_t = 0``) from epoch ``T'`` on. Before the first :meth:`start_epoch`, ``c_t = c_max``;
    the attribute ``c_t`` may also be set directly.

    The check comes before every step, the first included (their Algorithm 1's loop
    condition), so ``c_t = inf`` returns the start point after one pass. Their released
    code instead always takes the first step, uses ``T' = 100`` of 120 epochs and
    re-weights the outer loss per example; none of that is reproduced here.

    Parameters
    ----------
    eps : float
        Radius of the L-infinity ball.
    c_max : float
        Initial FOSC threshold (their CIFAR-10 value 0.5).
    t_prime_fraction : float
        Fraction of training over which ``c_t`` decays to 0 (their ``T' = 0.8 T``).
    random_start : bool
        ``True`` (default, as in their released code) starts uniformly in the ball;
        ``False`` starts at the clean input. FOSC is always measured from the ball's
        centre, the clean input (their code measures it from the random start).
    loss : {"ce", "cw"}
        Loss ascended and differentiated for FOSC.
    """

    name = "fosc"

    def __init__(self, eps: float, c_max: float = 0.5, t_prime_fraction: float = 0.8,
                 random_start: bool = True, loss: str = "ce") -> None:
        super().__init__(eps, random_start, loss)
        check_real("c_max", c_max, minimum=0)
        if (isinstance(t_prime_fraction, bool) or not isinstance(t_prime_fraction, (int, float))
                or not 0 < t_prime_fraction <= 1):
            raise ValueError(f"t_prime_fraction must be a number in (0, 1], got {t_prime_fraction!r}")
        self.c_max = float(c_max)
        self.t_prime_fraction = float(t_prime_fraction)
        self.c_t = self.c_max

    def start_epoch(self, t: int, epochs: int) -> None:
        """Set ``c_t = max(c_max - t * c_max / (t_prime_fraction * epochs), 0)``."""
        _check_epoch(t, epochs)
        self.c_t = max(self.c_max - t * self.c_max / (self.t_prime_fraction * epochs), 0.0)

    def _gradient(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        return None, _input_grad(model, x, y, self.loss)

    def _stop(self, x_adv, x, y, logits, grad, idx) -> torch.Tensor:
        return fosc(x_adv, x, grad, self.eps) <= self.c_t


class FATMaximizer(_EarlyStopPGD):
    """Friendly adversarial training of Zhang et al. (2020): early-stopped PGD-K-tau.

    Before each ascent step an example is checked at its current point: if it is
    misclassified and its budget is 0 it stops; if misclassified with budget left,
    the budget drops by one and it steps on; otherwise it steps on (their Algorithm 1).
    Each example starts with budget ``tau``, so ``tau = 0`` stops at the first
    misclassified iterate and a large ``tau`` is plain PGD-K.

    Parameters
    ----------
    eps : float
        Radius of the L-infinity ball.
    tau_fat : int or "dynamic"
        Budget ``tau`` >= 0 (default 0, the paper's main setting), or ``"dynamic"``:
        their schedule ``tau = 0`` up to epoch 50, 1 up to 90, 2 after (of 120), applied
        to the fraction ``(t + 1) / epochs`` by :meth:`start_epoch` (``0`` until called).
    random_start : bool
        ``True`` (default, the uniform start of their released code) or ``False``
        (start at the clean input). Their code also adds Gaussian noise of scale
        0.001 to every step; this class does not (plain PGD steps).
    loss : {"ce", "cw"}
        Loss ascended.
    """

    name = "fat"
    DYNAMIC_TAU = ((50 / 120, 0), (90 / 120, 1), (1.0, 2))

    def __init__(self, eps: float, tau_fat: int | str = 0, random_start: bool = True, loss: str = "ce") -> None:
        super().__init__(eps, random_start, loss)
        ok_int = not isinstance(tau_fat, bool) and isinstance(tau_fat, int) and tau_fat >= 0
        if not ok_int and tau_fat != "dynamic":
            raise ValueError(f"tau_fat must be an integer >= 0 or 'dynamic', got {tau_fat!r}")
        self.tau_fat = tau_fat
        self.tau = 0 if tau_fat == "dynamic" else tau_fat

    def start_epoch(self, t: int, epochs: int) -> None:
        """For ``tau_fat="dynamic"`` set ``tau`` from the training fraction ``(t + 1) / epochs``."""
        _check_epoch(t, epochs)
        if self.tau_fat == "dynamic":
            self.tau = next(tau for frac, tau in self.DYNAMIC_TAU if (t + 1) / epochs <= frac)

    def _reset(self, n: int, device: torch.device) -> None:
        self._budget = torch.full((n,), self.tau, dtype=torch.long, device=device)

    def _stop(self, x_adv, x, y, logits, grad, idx) -> torch.Tensor:
        wrong = logits.argmax(1) != y
        stop = wrong & (self._budget[idx] == 0)
        self._budget[idx[wrong & ~stop]] -= 1
        return stop


MAXIMIZERS = {"clean": Clean, "pgd": PGDMaximizer, "fosc": FOSCMaximizer, "fat": FATMaximizer,
              "free": FreeMaximizer, "fast": FastMaximizer, "yopo": YOPOMaximizer, "atta": ATTAMaximizer}


def build_maximizer(name: str, eps: float, **kwargs):
    """Construct the maximizer registered as ``name`` in :data:`MAXIMIZERS` with radius ``eps``.

    ``kwargs`` go to its constructor (e.g. ``c_max`` for ``"fosc"``, ``tau_fat`` for
    ``"fat"``, ``n`` and ``layer`` for ``"yopo"``, ``reset`` for ``"atta"``); ``"clean"``
    takes none and ignores ``eps``. The Amata+ methods live in :mod:`amata_lib.plus`.

    Raises
    ------
    ValueError
        Unknown ``name``, a keyword the maximizer does not take, or a bad value.
    """
    if name not in MAXIMIZERS:
        raise ValueError(f"name must be one of {sorted(MAXIMIZERS)}, got {name!r}")
    cls = MAXIMIZERS[name]
    params = [p for p in inspect.signature(cls).parameters if p != "eps"]
    for key in kwargs:
        if key not in params:
            raise ValueError(f"maximizer {name!r} has no parameter {key!r}; allowed: {params}")
    if cls is Clean:
        return cls()
    return cls(eps, **kwargs)
