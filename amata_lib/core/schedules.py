"""Annealing schedules: epoch ``t`` -> the inner maximizer's plan ``(K_t, alpha_t)``.

A schedule only decides hyper-parameters; it does not attack or train. The trainer
asks ``schedule(t)`` at the start of epoch ``t`` and hands the :class:`Plan` to an
inner maximizer (:mod:`amata_lib.core.maximizers`). Amata is one schedule among others,
so the same mechanism can anneal any maximizer whose effort is set by a step count.

Cost model: with a plan of ``K`` ascent steps one minibatch costs ``K + 1``
forward+backward passes -- ``K`` input gradients for the inner maximization and one
parameter gradient for the outer update. Random starts cost no pass.

Notation (the paper's, used across the library): ``K_t`` is ``Plan.steps`` (``steps=``
wherever a function takes it; ``k`` in configs and ``--k`` on the command line for a
constant plan); ``k_min``/``k_max`` its bounds; ``alpha`` the step size; ``tau`` the
travel ``K_t * alpha_t``; ``T`` = ``epochs``; ``t`` the epoch counted from 0. For Free
and YOPO ``Plan.steps`` is their ``m`` (replays, full passes).

Schedules by name (the command line and the configs) are built by
:func:`amata_lib.spec.make_schedule`, which also knows the adaptive schedule of
:mod:`amata_lib.study.adaptive`; nothing here imports beyond :mod:`amata_lib.infra`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from ..infra.checks import check_choice, check_int, check_positive
from ..infra.errors import UserError

ROUNDINGS = ("round", "floor", "ceil")
TRAVEL_PER_EPS = 2.5
"""By Madry et al.'s rule the inner steps of one plan travel ``2.5 * eps`` in all (``K * alpha``)."""


def travel(eps: float) -> float:
    """The default travel ``tau = K_t * alpha_t`` of a plan: ``2.5 * eps`` (Madry et al.)."""
    return TRAVEL_PER_EPS * eps


def step_for(eps: float, steps: int) -> float:
    """The default PGD step for ``steps`` steps at radius ``eps``: ``travel(eps) / steps``."""
    return travel(eps) / steps


def _to_int(x: float, rounding: str) -> int:
    """Make a real step count an integer; ``round`` is half-up (2.5 -> 3), not banker's."""
    if rounding == "round":
        return int(math.floor(x + 0.5))
    if rounding == "floor":
        return int(math.floor(x))
    return int(math.ceil(x))


@dataclass(frozen=True)
class Plan:
    """Hyper-parameters of the inner maximizer for one epoch: ``steps`` = K_t, ``alpha`` = alpha_t."""

    steps: int
    alpha: float

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=1)
        check_positive("alpha", self.alpha)

    @property
    def passes(self) -> int:
        """Forward+backward passes per minibatch, K inner steps plus one outer update."""
        return self.steps + 1


class Schedule:
    """Base class: ``schedule(t)`` returns the :class:`Plan` of epoch ``t`` in ``0 .. epochs-1``."""

    epochs: int

    def plan(self, t: int) -> Plan:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def __call__(self, t: int) -> Plan:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < self.epochs:
            raise UserError(f"t must be an integer epoch in [0, {self.epochs - 1}], got {t!r}")
        return self.plan(t)

    def plans(self) -> list[Plan]:
        """The plan of every epoch, in order."""
        return [self(t) for t in range(self.epochs)]

    def fingerprint(self) -> list | dict:
        """What identifies the schedule in a checkpoint's settings: every epoch's ``[K_t, alpha_t]``."""
        return [[p.steps, p.alpha] for p in self.plans()]

    def cost(self) -> int:
        """Total forward+backward passes per minibatch position over all epochs."""
        return sum(p.passes for p in self.plans())

    @property
    def max_steps(self) -> int:
        """Largest step count the schedule actually uses."""
        return max(p.steps for p in self.plans())


def relative_cost(schedule: Schedule, k_ref: int | None = None) -> float:
    """Cost of ``schedule`` divided by the cost of PGD-``k_ref`` over the same epochs.

    ``k_ref`` defaults to the schedule's ``k_max`` where it has one (Amata(2, 10) is
    compared with PGD-10 even if rounding never reaches 10), else to the largest
    step count it uses.
    """
    if k_ref is None:
        k_ref = getattr(schedule, "k_max", schedule.max_steps)
    k_ref = check_int("k_ref", k_ref)
    return schedule.cost() / ((k_ref + 1) * schedule.epochs)


class Constant(Schedule):
    """PGD-K: the same ``steps`` and ``alpha`` in every epoch."""

    def __init__(self, steps: int, alpha: float, epochs: int) -> None:
        self._plan = Plan(check_int("steps", steps), check_positive("alpha", alpha))
        self.epochs = check_int("epochs", epochs)

    def plan(self, t: int) -> Plan:
        return self._plan

    def __repr__(self) -> str:
        return f"Constant(steps={self._plan.steps}, alpha={self._plan.alpha:g}, epochs={self.epochs})"


def check_range(schedule: Schedule, k_min: int, k_max: int, tau: float, epochs: int) -> None:
    """Check and set ``k_min <= k_max``, ``tau > 0`` and ``epochs`` on a schedule that moves between K bounds."""
    schedule.k_min = check_int("k_min", k_min)
    schedule.k_max = check_int("k_max", k_max)
    if schedule.k_min > schedule.k_max:
        raise UserError(f"k_min must be <= k_max, got k_min={k_min!r} > k_max={k_max!r}")
    schedule.tau = check_positive("tau", tau)
    schedule.epochs = check_int("epochs", epochs)


class _Annealed(Schedule):
    """Shared validation for schedules going from ``k_min`` to ``k_max`` with ``alpha_t = tau / K_t``."""

    def __init__(self, k_min: int, k_max: int, tau: float, epochs: int, rounding: str = "round") -> None:
        check_range(self, k_min, k_max, tau, epochs)
        self.rounding = check_choice("rounding", rounding, ROUNDINGS)

    def real_steps(self, t: int) -> float:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def plan(self, t: int) -> Plan:
        steps = _to_int(self.real_steps(t), self.rounding)
        steps = min(max(steps, self.k_min), self.k_max)
        return Plan(steps, self.tau / steps)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(k_min={self.k_min}, k_max={self.k_max}, "
                f"tau={self.tau:g}, epochs={self.epochs}, rounding={self.rounding!r})")


class Amata(_Annealed):
    """Amata's linear schedule (the paper's Algorithm 1).

    ``K_t = K_min + (K_max - K_min) * t / T`` made an integer, and ``alpha_t = tau / K_t``
    computed from that integer, so every epoch's steps add up to the same travel
    ``K_t * alpha_t = tau``.

    Integer choice (the paper is silent): ``rounding="round"`` (default, half up).
    With ``t / T`` the real value never reaches ``K_max`` (at ``t = T - 1`` it is
    ``K_max - (K_max - K_min) / T``); ``floor`` would therefore never use ``K_max``
    unless ``T`` is tiny, while rounding reaches it once ``(K_max - K_min) / T <= 1/2``.
    ``floor`` and ``ceil`` are available to reproduce either reading.
    """

    def real_steps(self, t: int) -> float:
        return self.k_min + (self.k_max - self.k_min) * t / self.epochs


class Exponential(_Annealed):
    """Geometric interpolation ``K_t = K_min * (K_max / K_min) ** (t / T)`` (an ablation of the paper).

    The paper's appendix names an exponential scheme without a formula; this is our
    choice: the same end points and ``t / T`` as :class:`Amata`, growing by a
    constant factor per epoch, so it spends fewer steps early than the linear one.
    """

    def real_steps(self, t: int) -> float:
        return self.k_min * (self.k_max / self.k_min) ** (t / self.epochs)


class Step(Schedule):
    """Piecewise constant: ``steps[i]`` during the i-th of ``len(steps)`` equal stages, ``alpha = tau / K``.

    Stage of epoch ``t`` is ``floor(t * n / T)``; stage lengths differ by at most one epoch.
    """

    def __init__(self, steps: Sequence[int], tau: float, epochs: int) -> None:
        if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or len(steps) == 0:
            raise UserError(f"steps must be a non-empty sequence of integers, got {steps!r}")
        self.steps = [check_int(f"steps[{i}]", k) for i, k in enumerate(steps)]
        self.tau = check_positive("tau", tau)
        self.epochs = check_int("epochs", epochs)
        if len(self.steps) > self.epochs:
            raise UserError(f"steps must have at most epochs={self.epochs} stages, got {len(self.steps)}")

    def plan(self, t: int) -> Plan:
        k = self.steps[t * len(self.steps) // self.epochs]
        return Plan(k, self.tau / k)

    def __repr__(self) -> str:
        return f"Step(steps={self.steps}, tau={self.tau:g}, epochs={self.epochs})"


class FromFunction(Schedule):
    """A schedule from any ``fn(t) -> Plan | (steps, alpha)``; every returned plan is validated."""

    def __init__(self, fn: Callable[[int], Plan | tuple[int, float]], epochs: int, name: str = "custom") -> None:
        if not callable(fn):
            raise UserError(f"fn must be callable, got {fn!r}")
        self.fn = fn
        self.epochs = check_int("epochs", epochs)
        self.name = name

    def plan(self, t: int) -> Plan:
        out = self.fn(t)
        if isinstance(out, Plan):
            return out
        try:
            steps, alpha = out
        except (TypeError, ValueError):
            raise UserError(f"fn({t}) must return a Plan or (steps, alpha), got {out!r}") from None
        return Plan(check_int(f"steps at t={t}", steps), check_positive(f"alpha at t={t}", alpha))

    def __repr__(self) -> str:
        return f"FromFunction({self.name}, epochs={self.epochs})"
