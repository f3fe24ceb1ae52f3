"""Schedule explorer: what a choice of shape, K_min, K_max, tau, eps and T means, epoch by epoch.

The logic is three plain functions -- :func:`build_schedule` (settings -> schedule),
:func:`explore` (schedule -> per-epoch K_t, alpha_t and cumulative cost against
PGD-K_max) and :func:`plot_exploration` -- so it can be tested and called from a
static page. :func:`schedule_explorer` only wires ipywidgets sliders to them.

Shapes are looked up in the :data:`SHAPES` registry, so a new shape (for example
the optimal-control schedule of the PMP chapter) is added with
``SHAPES["optimal"] = builder`` without touching any function here. A builder is
called as ``builder(k_min=..., k_max=..., tau=..., epochs=...)`` and returns a
:class:`~amata_lib.schedules.Schedule`.
"""
from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass
from typing import Any, Callable

import matplotlib.pyplot as plt
import numpy as np

from .control import optimal_shape_schedule
from .errors import UserError
from .schedules import (
    Amata,
    Constant,
    Exponential,
    Schedule,
    Step,
    _check_int,
    _check_positive,
    relative_cost,
)

ShapeBuilder = Callable[..., Schedule]
STEP_STAGES = 4  # stages of the "step" shape (fewer if T or K_max - K_min + 1 is smaller)


def _constant(*, k_min: int, k_max: int, tau: float, epochs: int) -> Schedule:
    """PGD-K_max with ``alpha = tau / K_max`` (``k_min`` unused): the reference of every comparison."""
    return Constant(k_max, tau / k_max, epochs)


def _linear(*, k_min: int, k_max: int, tau: float, epochs: int) -> Schedule:
    """Amata's linear schedule (Algorithm 1), rounded half up."""
    return Amata(k_min, k_max, tau, epochs)


def _exponential(*, k_min: int, k_max: int, tau: float, epochs: int) -> Schedule:
    """Geometric growth from K_min to K_max."""
    return Exponential(k_min, k_max, tau, epochs)


def _step(*, k_min: int, k_max: int, tau: float, epochs: int) -> Schedule:
    """Equal stages whose K goes evenly (rounded) from K_min to K_max."""
    n = min(STEP_STAGES, epochs, k_max - k_min + 1)
    ks = [k_max] if n == 1 else [math.floor(k_min + (k_max - k_min) * i / (n - 1) + 0.5) for i in range(n)]
    return Step(ks, tau, epochs)


SHAPES: dict[str, ShapeBuilder] = {
    "constant": _constant,
    "linear": _linear,
    "exponential": _exponential,
    "step": _step,
    "optimal": optimal_shape_schedule,
}


def build_schedule(shape: str = "linear", *, k_min: int = 2, k_max: int = 10, tau: float | None = None,
                   eps: float = 0.2, epochs: int = 30) -> Schedule:
    """The schedule that the explorer's settings describe.

    Parameters
    ----------
    shape : str
        A key of :data:`SHAPES`: ``"constant"`` (PGD-K_max), ``"linear"`` (Amata),
        ``"exponential"``, ``"step"``, or any shape registered later.
    k_min, k_max : int
        Smallest and largest number of PGD steps, ``1 <= k_min <= k_max``.
    tau : float, optional
        Travel per epoch ``K_t * alpha_t``; defaults to ``2.5 * eps`` (Madry et al.'s rule).
    eps : float
        Radius of the L-infinity ball.
    epochs : int
        Number of epochs T.

    Raises
    ------
    ValueError
        Unknown ``shape`` or invalid number; the message names the parameter.
    """
    if shape not in SHAPES:
        raise UserError(f"shape must be one of {sorted(SHAPES)}, got {shape!r}")
    k_min, k_max = _check_int("k_min", k_min), _check_int("k_max", k_max)
    if k_min > k_max:
        raise UserError(f"k_min must be <= k_max, got k_min={k_min} > k_max={k_max}")
    eps = _check_positive("eps", eps)
    tau = 2.5 * eps if tau is None else _check_positive("tau", tau)
    return SHAPES[shape](k_min=k_min, k_max=k_max, tau=tau, epochs=epochs)


@dataclass(frozen=True)
class Exploration:
    """What the explorer shows for one schedule (arrays are indexed by epoch ``t = 0 .. T-1``).

    ``passes`` and ``ref_passes`` are cumulative forward+backward passes per minibatch
    position at the end of each epoch, for the schedule and for PGD-``k_ref``.
    ``warning`` is empty unless the settings cannot do what PGD is meant to do.
    """

    schedule: Schedule
    eps: float
    k_ref: int
    steps: np.ndarray
    alpha: np.ndarray
    passes: np.ndarray
    ref_passes: np.ndarray
    cost_ratio: float
    warning: str

    @property
    def epochs(self) -> int:
        """Number of epochs T."""
        return len(self.steps)


def explore(schedule: Schedule, *, eps: float, k_ref: int) -> Exploration:
    """Per-epoch ``K_t``, ``alpha_t`` and cumulative cost of ``schedule`` next to PGD-``k_ref``.

    The warning is set when some epoch's total travel ``K_t * alpha_t`` is below
    ``eps``: PGD started at the clean input then cannot reach the boundary of the ball.
    """
    eps = _check_positive("eps", eps)
    k_ref = _check_int("k_ref", k_ref)
    plans = schedule.plans()
    steps = np.array([p.steps for p in plans])
    alpha = np.array([p.alpha for p in plans])
    travel = float(np.min(steps * alpha))
    warning = ""
    if travel < eps * (1 - 1e-9):
        warning = (f"travel K_t * alpha_t = {travel:.3g} < eps = {eps:.3g}: the steps cannot reach "
                   f"the boundary of the eps-ball from the clean input")
    return Exploration(schedule=schedule, eps=eps, k_ref=k_ref, steps=steps, alpha=alpha,
                       passes=np.cumsum(steps + 1),
                       ref_passes=(k_ref + 1) * np.arange(1, len(plans) + 1),
                       cost_ratio=relative_cost(schedule, k_ref), warning=warning)


def summary(result: Exploration) -> str:
    """One line: the cost ratio against PGD-K_max, then the warning if any."""
    text = (f"{result.schedule!r}: {int(result.passes[-1])} passes per minibatch position vs "
            f"{int(result.ref_passes[-1])} for PGD-{result.k_ref}, cost ratio {result.cost_ratio:.3f}")
    return text + (f"\nwarning: {result.warning}" if result.warning else "")


def plot_exploration(result: Exploration) -> plt.Figure:
    """Three panels: K_t, alpha_t (right axis in units of eps) and cumulative cost vs PGD-K_max."""
    t = np.arange(result.epochs)
    edges = np.arange(result.epochs + 1)  # epoch t covers [t, t + 1)
    name, ref = type(result.schedule).__name__, f"PGD-{result.k_ref}"
    fig, (ax_k, ax_a, ax_c) = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    ax_k.stairs(result.steps, edges, baseline=None, label=name)
    ax_k.axhline(result.k_ref, color="k", ls="--", lw=1, label=ref)
    ax_k.set(xlabel="epoch $t$", ylabel="$K_t$ (PGD steps)", title="steps per minibatch")
    ax_k.legend(loc="lower right")
    ax_a.stairs(result.alpha, edges, baseline=None, color="C1")
    ax_a.axhline(result.eps, color="grey", ls=":", lw=1)
    ax_a.text(0, result.eps, r" $\alpha = \epsilon$", va="bottom", color="grey")
    ax_a.set(xlabel="epoch $t$", ylabel=r"$\alpha_t$", title=r"step size $\alpha_t = \tau / K_t$")
    eps = result.eps
    ax_a.secondary_yaxis("right", functions=(lambda a: a / eps, lambda r: r * eps)).set_ylabel(
        r"$\alpha_t / \epsilon$")
    ax_c.plot(t + 1, result.passes, label=name)
    ax_c.plot(t + 1, result.ref_passes, "k--", lw=1, label=ref)
    ax_c.set(xlabel="epochs done", ylabel="passes per minibatch",
             title=f"cumulative cost (ratio {result.cost_ratio:.2f})")
    ax_c.legend(loc="upper left")
    return fig


def figure_png(fig: plt.Figure) -> bytes:
    """The figure as PNG bytes (for an image widget), closing it so no figure is left open."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=80)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def schedule_explorer(shape: str = "linear", *, k_min: int = 2, k_max: int = 10, tau: float = 0.5,
                      eps: float = 0.2, epochs: int = 30, draw: bool = True) -> Any:
    """An ipywidgets box with sliders for K_min, K_max, tau, eps, T and a shape dropdown.

    Every change rebuilds the schedule with :func:`build_schedule`, recomputes
    :func:`explore` and (if ``draw``) redraws :func:`plot_exploration` into an image
    widget. The returned box exposes ``controls`` (name -> widget), ``result`` (the
    latest :class:`Exploration`, ``None`` for invalid settings), ``message`` (the text
    shown under the sliders), ``image`` and ``update()``, so tests can drive it
    without a browser. Its text form is the message, not the image bytes.

    The figure goes into an ``Image`` widget rather than an ``Output`` widget:
    notebook runners without a browser (nbclient, nbval) do not capture
    ``Output`` widgets reliably.
    """
    import ipywidgets as widgets

    class ScheduleExplorer(widgets.VBox):
        def __repr__(self) -> str:
            return f"ScheduleExplorer: {self.message}"

    style = {"description_width": "70px"}
    controls = {
        "shape": widgets.Dropdown(options=list(SHAPES), value=shape, description="shape", style=style),
        "k_min": widgets.IntSlider(value=k_min, min=1, max=40, description="K_min", style=style),
        "k_max": widgets.IntSlider(value=k_max, min=1, max=40, description="K_max", style=style),
        "tau": widgets.FloatSlider(value=tau, min=0.01, max=2.0, step=0.01, description="tau", style=style),
        "eps": widgets.FloatSlider(value=eps, min=0.01, max=1.0, step=0.01, description="eps", style=style),
        "epochs": widgets.IntSlider(value=epochs, min=1, max=200, description="epochs T", style=style),
    }
    text = widgets.HTML()
    image = widgets.Image(format="png")
    box = ScheduleExplorer([widgets.HBox(list(controls.values())[:3]), widgets.HBox(list(controls.values())[3:]),
                            text, image])
    box.controls, box.image, box.result, box.message = controls, image, None, ""

    def update(change: object = None) -> None:
        settings = {name: w.value for name, w in controls.items()}
        try:
            box.result = explore(build_schedule(**settings), eps=settings["eps"], k_ref=settings["k_max"])
            box.message = summary(box.result)
        except ValueError as exc:
            box.result, box.message = None, f"invalid settings: {exc}"
        text.value = "<br>".join(html.escape(line) for line in box.message.splitlines())
        image.value = figure_png(plot_exploration(box.result)) if draw and box.result is not None else b""

    for w in controls.values():
        w.observe(update, names="value")
    box.update = update
    update()
    return box
