"""Schedule explorer: what a choice of shape, K_min, K_max, tau, eps and T means, epoch by epoch.

The logic is three plain functions -- :func:`build_schedule` (settings -> schedule),
:func:`explore` (schedule -> per-epoch K_t, alpha_t and cumulative cost against
PGD-K_max) and :func:`plot_exploration` -- so it can be tested and called from a
static page. :func:`schedule_explorer` only wires ipywidgets sliders to them (it needs
a Python kernel); :func:`static_explorer_html` is the kernel-free counterpart for the
HTML book: the same arithmetic in JavaScript, a file shipped with the package
(``explorer.js``), which the browser test checks against the library.

Shapes are looked up in the ``SHAPES`` registry, so a new shape (for example
the optimal-control schedule of the PMP chapter) is added with
``SHAPES["optimal"] = builder`` without touching any function here. A builder is
called as ``builder(k_min=..., k_max=..., tau=..., epochs=...)`` and returns a
:class:`~amata_lib.core.schedules.Schedule`; the plain shapes translate the sliders into
a method of :func:`amata_lib.spec.make_schedule`, the one factory of schedules by name.
"""
from __future__ import annotations

import html
import io
from importlib import resources
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import matplotlib.pyplot as plt
import numpy as np

from ..core.schedules import Schedule, relative_cost, travel
from ..infra.checks import check_int, check_positive
from ..infra.errors import UserError
from ..spec import make_schedule
from ..study.control import optimal_shape_schedule

ShapeBuilder = Callable[..., Schedule]
STEP_STAGES = 4  # stages of the "step" shape (fewer if T or K_max - K_min + 1 is smaller)
# (min, max, step) of each slider, shared by the ipywidgets and the JavaScript explorer.
SLIDER_RANGES: dict[str, tuple[float, float, float]] = {
    "k_min": (1, 40, 1), "k_max": (1, 40, 1), "tau": (0.01, 2.0, 0.01), "eps": (0.01, 1.0, 0.01),
    "epochs": (1, 200, 1),
}


def _constant(*, k_min: int, k_max: int, tau: float, epochs: int) -> Schedule:
    """PGD-K_max with ``alpha = tau / K_max`` (``k_min`` unused): the reference of every comparison."""
    return make_schedule("pgd", epochs, k=k_max, alpha=tau / k_max)


def _linear(*, k_min: int, k_max: int, tau: float, epochs: int) -> Schedule:
    """Amata's linear schedule (Algorithm 1), rounded half up."""
    return make_schedule("amata", epochs, k_min=k_min, k_max=k_max, tau=tau)


def _exponential(*, k_min: int, k_max: int, tau: float, epochs: int) -> Schedule:
    """Geometric growth from K_min to K_max."""
    return make_schedule("exponential", epochs, k_min=k_min, k_max=k_max, tau=tau)


def _step(*, k_min: int, k_max: int, tau: float, epochs: int) -> Schedule:
    """Equal stages whose K goes evenly (rounded) from K_min to K_max."""
    n = min(STEP_STAGES, epochs, k_max - k_min + 1)
    ks = [k_max] if n == 1 else [math.floor(k_min + (k_max - k_min) * i / (n - 1) + 0.5) for i in range(n)]
    return make_schedule("step", epochs, stages=ks, tau=tau)


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
        A key of ``SHAPES``: ``"constant"`` (PGD-K_max), ``"linear"`` (Amata),
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
    k_min, k_max = check_int("k_min", k_min), check_int("k_max", k_max)
    if k_min > k_max:
        raise UserError(f"k_min must be <= k_max, got k_min={k_min} > k_max={k_max}")
    eps = check_positive("eps", eps)
    tau = travel(eps) if tau is None else check_positive("tau", tau)
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
    eps = check_positive("eps", eps)
    k_ref = check_int("k_ref", k_ref)
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

    def slider(cls: type, name: str, value: float, description: str) -> Any:
        lo, hi, step = SLIDER_RANGES[name]
        return cls(value=value, min=lo, max=hi, step=step, description=description, style=style)

    controls = {
        "shape": widgets.Dropdown(options=list(SHAPES), value=shape, description="shape", style=style),
        "k_min": slider(widgets.IntSlider, "k_min", k_min, "K_min"),
        "k_max": slider(widgets.IntSlider, "k_max", k_max, "K_max"),
        "tau": slider(widgets.FloatSlider, "tau", tau, "tau"),
        "eps": slider(widgets.FloatSlider, "eps", eps, "eps"),
        "epochs": slider(widgets.IntSlider, "epochs", epochs, "epochs T"),
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


# --------------------------------------------------------------------------- kernel-free explorer (HTML book)
STATIC_SHAPES = ("constant", "linear", "exponential", "step")  # the shapes of SHAPES that are plain arithmetic
_STATIC_LABELS = {"constant": "constant (PGD-K_max)", "linear": "linear (Amata)", "exponential": "exponential",
                  "step": "step"}
_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_SLIDER_LABELS = {"k_min": "K_min", "k_max": "K_max", "tau": "τ", "eps": "ε", "epochs": "T (epochs)"}

EXPLORER_JS = "explorer.js"
"""The explorer's JavaScript, a file of this package (``amata_lib/book/explorer.js``), inlined into each snippet."""


def explorer_js() -> str:
    """The text of :data:`EXPLORER_JS`."""
    return resources.files(__package__).joinpath(EXPLORER_JS).read_text(encoding="utf-8")



def _check_static(shape: str, prefix: str, values: dict[str, float]) -> None:
    """Raise :class:`UserError` unless the JavaScript explorer can start from these settings."""
    if shape not in STATIC_SHAPES:
        raise UserError(f"shape must be one of {list(STATIC_SHAPES)} in the static explorer "
                        f"(the other shapes need Python), got {shape!r}")
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise UserError(f"prefix must be a letter followed by letters, digits, '-' or '_', got {prefix!r}")
    for name, value in values.items():
        lo, hi, step = SLIDER_RANGES[name]
        on_grid = math.isclose(lo + round((value - lo) / step) * step, value, abs_tol=1e-9)
        if not (lo <= value <= hi and on_grid):
            raise UserError(f"{name} must be a slider position, a multiple of {step:g} in [{lo:g}, {hi:g}], "
                            f"got {value!r}")


def _slider(prefix: str, name: str, label: str, value: float, shown: str,
            bounds: tuple[float, float, float]) -> str:
    """One ``<input type="range">`` with id ``{prefix}-{name}`` and its readout ``{prefix}-{name}-value``."""
    lo, hi, step = bounds
    return (f'<label>{label} <input type="range" id="{prefix}-{name}" min="{lo:g}" max="{hi:g}" '
            f'step="{step:g}" value="{float(value):g}"> <output id="{prefix}-{name}-value" '
            f'for="{prefix}-{name}">{html.escape(shown)}</output></label>')


def _sliders(prefix: str, shape: str, values: dict[str, float]) -> str:
    """The shape slider (an index into ``STATIC_SHAPES``) and one slider per number."""
    shape_bounds = (0, len(STATIC_SHAPES) - 1, 1)
    out = [_slider(prefix, "shape", "shape", STATIC_SHAPES.index(shape), _STATIC_LABELS[shape], shape_bounds)]
    for name, value in values.items():
        shown = f"{value:.2f}" if name in ("tau", "eps") else str(int(value))
        out.append(_slider(prefix, name, _SLIDER_LABELS[name], value, shown, SLIDER_RANGES[name]))
    return "\n".join(out)


def _style(prefix: str) -> str:
    """CSS for one explorer, every rule scoped to its id."""
    p = f"#{prefix}"
    return (f"<style>\n{p} {{font-size: 0.9em; border: 1px solid #ccc; border-radius: 4px; padding: 0.5em}}\n"
            f"{p} .amata-sliders {{display: flex; flex-wrap: wrap; gap: 0.2em 1.5em}}\n"
            f"{p} input[type=range] {{vertical-align: middle; width: 9em}}\n"
            f"{p} output {{display: inline-block; min-width: 4ch; font-family: monospace}}\n"
            f"{p} {p}-shape-value {{min-width: 20ch}}\n"
            f"{p} .amata-list {{display: block; font-family: monospace; max-height: 4.5em; overflow-y: auto}}\n"
            f"{p}-warning {{color: #b00}}\n{p}-warning:not(:empty)::before {{content: 'warning: '}}\n</style>")


def static_explorer_html(shape: str = "linear", *, k_min: int = 2, k_max: int = 10, tau: float = 0.5,
                         eps: float = 0.2, epochs: int = 30, prefix: str = "amata-explorer") -> str:
    """A self-contained HTML snippet: the schedule explorer as sliders and inline JavaScript, no kernel.

    It shows what :func:`explore` and :func:`plot_exploration` show for the settings of
    the sliders (shape, K_min, K_max, tau, eps, T; the ranges of ``SLIDER_RANGES``):
    an inline SVG of the K_t staircase, alpha_t against eps and the cumulative passes
    against PGD-K_max, the line of :func:`summary`, the tau-below-eps warning of
    :func:`explore` and the lists of K_t and alpha_t. The JavaScript repeats the arithmetic
    of :mod:`amata_lib.core.schedules` operation by operation (K_t rounded half up as
    ``floor(x + 0.5)`` and clamped to [K_min, K_max], ``alpha_t = tau / K_t``, ``K_t + 1``
    passes per minibatch, cost ratio over ``(K_max + 1) * T``), so its numbers are the
    library's. Nothing is loaded from elsewhere (no CDN, no file), and the output is the
    same on every call.

    Only the shapes of ``STATIC_SHAPES`` are offered: the ``"optimal"`` shape of
    ``SHAPES`` (and any shape registered later) is computed in Python, the optimal one
    from the PMP solution that :mod:`amata_lib.study.control` derives with sympy, and has no
    JavaScript counterpart; it stays in :func:`schedule_explorer`.

    Element ids start with ``prefix``: ``{prefix}`` (the box), ``{prefix}-shape``,
    ``-k_min``, ``-k_max``, ``-tau``, ``-eps``, ``-epochs`` (the sliders, each with a
    ``...-value`` readout), ``-summary`` (its ``data-cost-ratio`` holds the exact ratio),
    ``-warning``, ``-steps`` and ``-alpha`` (comma-separated lists; ``data-values`` holds
    them as JSON) and ``-plot``. Two explorers on one page need two prefixes.

    Parameters
    ----------
    shape : str
        The starting shape, one of ``STATIC_SHAPES``.
    k_min, k_max, tau, eps, epochs : int or float
        The starting settings, as for :func:`build_schedule`; each must be a position of its slider.
    prefix : str
        Id of the explorer's box and start of its elements' ids: a letter, then letters,
        digits, ``-`` or ``_``.

    Returns
    -------
    str
        HTML with the K_t list of the starting settings already filled in, so a page
        without JavaScript shows them too.

    Raises
    ------
    UserError
        Settings :func:`build_schedule` rejects, a shape outside ``STATIC_SHAPES``, a
        value off its slider, or a bad ``prefix``.
    """
    result = explore(build_schedule(shape, k_min=k_min, k_max=k_max, tau=tau, eps=eps, epochs=epochs),
                     eps=eps, k_ref=k_max)
    values = {"k_min": k_min, "k_max": k_max, "tau": tau, "eps": eps, "epochs": epochs}
    _check_static(shape, prefix, values)
    config = {"shapes": list(STATIC_SHAPES), "labels": _STATIC_LABELS, "stepStages": STEP_STAGES}
    steps = ", ".join(str(int(k)) for k in result.steps)
    return (f'<div id="{prefix}" class="amata-static-explorer" data-config="{html.escape(json.dumps(config))}">\n'
            f"{_style(prefix)}\n<div class=\"amata-sliders\">\n{_sliders(prefix, shape, values)}\n</div>\n"
            f'<p id="{prefix}-summary"></p>\n<p id="{prefix}-warning"></p>\n'
            f'<div>K_t per epoch: <span id="{prefix}-steps" class="amata-list">{steps}</span></div>\n'
            f'<div>α_t per epoch: <span id="{prefix}-alpha" class="amata-list"></span></div>\n'
            f'<div id="{prefix}-plot"></div>\n'
            f"<script>\n(function (root) {{\n{explorer_js()}}})(document.getElementById({json.dumps(prefix)}));\n"
            "</script>\n</div>")
