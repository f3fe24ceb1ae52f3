"""Plot helpers for the book's chapters: they draw figures and compute nothing else.

Every function returns the :class:`matplotlib.figure.Figure` it drew, so a chapter
ends its cell with ``plt.show()`` and a test can inspect the axes.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..infra.checks import check_int, check_real
from ..infra.errors import UserError


def _grayscale(name: str, images: torch.Tensor) -> torch.Tensor:
    """Images as ``N x H x W``; accepts ``N x 1 x H x W`` or ``N x H x W``."""
    if images.ndim == 4 and images.shape[1] == 1:
        return images[:, 0]
    if images.ndim == 3:
        return images
    raise UserError(f"{name} must have shape N x 1 x H x W or N x H x W, got {tuple(images.shape)}")


def _check_probs(name: str, probs: torch.Tensor, n: int) -> None:
    if probs.ndim != 2 or probs.shape[0] != n:
        raise UserError(f"{name} must have shape {n} x classes, got {tuple(probs.shape)}")


def _prediction_title(probs: torch.Tensor) -> str:
    """``"pred 3 (0.97)"``: the predicted class and its probability, rounded."""
    confidence, label = probs.max(dim=0)
    return f"pred {int(label)} ({float(confidence):.2f})"


def show_adversarial_grid(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    p_clean: torch.Tensor,
    p_adv: torch.Tensor,
    *,
    eps: float,
    y: torch.Tensor | None = None,
) -> Figure:
    """Clean images, their adversarial versions and the perturbations, one column per example.

    Row 1 shows ``x`` titled with the model's prediction on it (and the true label
    ``y`` when given), row 2 shows ``x_adv`` with the prediction on it, row 3 shows
    ``x_adv - x`` on a diverging colour scale fixed to ``[-eps, eps]``, so a pixel
    at full saturation moved by the whole budget.

    Parameters
    ----------
    x, x_adv : torch.Tensor
        Clean and adversarial grayscale images in ``[0, 1]``, shape ``N x 1 x H x W`` or ``N x H x W``.
    p_clean, p_adv : torch.Tensor
        Class probabilities of the model on ``x`` and on ``x_adv``, shape ``N x classes``.
    eps : float
        Radius of the L-infinity ball, sets the perturbation colour scale.
    y : torch.Tensor, optional
        True labels, shape ``N``.

    Returns
    -------
    matplotlib.figure.Figure
        A figure with ``3 x N`` image axes and a colour bar for the perturbation row.
    """
    clean = _grayscale("x", x.detach().cpu()).numpy()
    adv = _grayscale("x_adv", x_adv.detach().cpu()).numpy()
    if clean.shape != adv.shape:
        raise UserError(f"x_adv must have the shape of x, got {tuple(x_adv.shape)} and {tuple(x.shape)}")
    n = clean.shape[0]
    if n == 0:
        raise UserError("x must hold at least one image, got 0")
    _check_probs("p_clean", p_clean, n)
    _check_probs("p_adv", p_adv, n)
    if y is not None and tuple(y.shape) != (n,):
        raise UserError(f"y must have shape ({n},), got {tuple(y.shape)}")
    check_real("eps", eps, minimum=0, strict=True)

    fig, axes = plt.subplots(3, n, figsize=(1.5 * n + 1.0, 5.0), squeeze=False,
                             layout="constrained")
    for i in range(n):
        title = _prediction_title(p_clean[i])
        if y is not None:
            title = f"label {int(y[i])}\n{title}"
        axes[0, i].imshow(clean[i], cmap="gray", vmin=0.0, vmax=1.0)
        axes[0, i].set_title(title, fontsize=9)
        axes[1, i].imshow(adv[i], cmap="gray", vmin=0.0, vmax=1.0)
        axes[1, i].set_title(_prediction_title(p_adv[i]), fontsize=9)
        delta = axes[2, i].imshow(adv[i] - clean[i], cmap="RdBu_r", vmin=-eps, vmax=eps)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for row, name in enumerate(("clean", "adversarial", "perturbation")):
        axes[row, 0].set_ylabel(name)
    fig.colorbar(delta, ax=axes[2, :].tolist(), shrink=0.8, label=r"$x_{adv} - x$")
    return fig


PASS_KINDS = {  # kind -> (width in full passes, colour, legend text)
    "attack": (1.0, "tab:red", "full pass: input gradient (attack)"),
    "train": (1.0, "tab:blue", "full pass: parameter gradient"),
    "both": (1.0, "tab:purple", "full pass: both gradients"),
    "layer": (0.25, "tab:orange", "first layer only (YOPO)"),
}


def inner_loop_events(method: str, *, k: int = 1, m: int = 1, n: int = 1) -> list[tuple[str, bool]]:
    """One minibatch of ``method`` as its passes in order: ``(kind, parameter step after it)``.

    ``pgd`` / ``atta``: ``k`` attack passes then one training pass; ``fast``: one of each;
    ``free``: ``m`` passes each giving both gradients, a step after each; ``yopo``: ``m``
    such passes, all but the last followed by ``n`` first-layer passes, one step at the end.
    """
    for name, value in (("k", k), ("m", m), ("n", n)):
        check_int(name, value, minimum=1)
    if method in ("pgd", "atta"):
        return [("attack", False)] * k + [("train", True)]
    if method == "fast":
        return [("attack", False), ("train", True)]
    if method == "free":
        return [("both", True)] * m
    if method == "yopo":
        return ([("both", False)] + [("layer", False)] * n) * (m - 1) + [("both", True)]
    raise UserError(f"method must be one of ('pgd', 'atta', 'fast', 'free', 'yopo'), got {method!r}")


def plot_inner_loops(rows: dict[str, list[tuple[str, bool]]], *, title: str | None = None) -> Figure:
    """One minibatch per row as a timeline of passes (bar width = cost) with a mark at each parameter step."""
    if not rows:
        raise UserError("rows must name at least one method")
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.4))
    for i, events in enumerate(rows.values()):
        y, x = len(rows) - 1 - i, 0.0
        for kind, step in events:
            if kind not in PASS_KINDS:
                raise UserError(f"pass kind must be one of {sorted(PASS_KINDS)}, got {kind!r}")
            width, colour, _ = PASS_KINDS[kind]
            ax.barh(y, width * 0.92, left=x, height=0.5, color=colour)
            x += width
            if step:
                ax.plot(x - 0.04, y + 0.36, marker="v", color="black", ms=6)
    ax.set_yticks(range(len(rows)), list(rows)[::-1])
    ax.set_xlabel("cost of one minibatch, in full forward+backward passes")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for _, c, _ in PASS_KINDS.values()]
    handles.append(plt.Line2D([], [], marker="v", color="black", ls=""))
    ax.legend(handles, [t for _, _, t in PASS_KINDS.values()] + ["parameter step"], loc="upper center",
              bbox_to_anchor=(0.5, -0.28), ncol=3, fontsize=8, frameon=False)
    ax.set_ylim(-0.6, len(rows) - 0.2)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_protocol(runs: dict[int, dict[str, dict]], verdict: dict, *, colors: dict[str, str] | None = None,
                  title: str = "") -> Figure:
    """Robust accuracy against training passes (mean over seeds, band = lowest to highest seed), and K_t per epoch.

    ``runs[seed][row]`` are stored results and ``verdict`` is
    :func:`amata_lib.study.verdict.verdict` of them; the target is the dashed line. Passes
    include the shared warm-up (as the cost to target does). A K_t line that coincides
    with an earlier row's is dashed, so that neither hides the other.
    """
    rows = list(verdict["rows"])
    colors = colors or {name: method_color(name) for name in rows}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for name in rows:
        hist = [runs[s][name]["history"] for s in sorted(runs)]
        warm = [((runs[s][name].get("report") or {}).get("warmup") or {}).get("passes", 0) for s in sorted(runs)]
        passes = np.mean([[r["passes"] + w for r in h] for h, w in zip(hist, warm)], axis=0)
        acc = np.array([[r["robust_acc"] for r in h] for h in hist])
        ax.plot(passes, acc.mean(0), color=colors[name], label=name)
        ax.fill_between(passes, acc.min(0), acc.max(0), color=colors[name], alpha=0.15, linewidth=0)
        ks = verdict["rows"][name]["k_used"]
        hidden = any(verdict["rows"][other]["k_used"] == ks for other in rows[:rows.index(name)])
        bx.step(np.arange(1, len(hist[0]) + 1), ks, where="mid", color=colors[name], label=name,
                ls="--" if hidden else "-")  # dashed where it lies on an earlier row's line
    ax.axhline(verdict["target"], color="k", ls="--", lw=1, label=f"target {100 * verdict['target']:.1f}%")
    ax.set_xlabel("minibatch forward+backward passes (warm-up included)")
    ax.set_ylabel("per-epoch PGD-20 accuracy")
    ax.legend(fontsize=8, loc="lower right")
    bx.set_xlabel("epoch")
    bx.set_ylabel("K_t used")
    bx.set_ylim(0, max(max(r["k_used"]) for r in verdict["rows"].values()) + 1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_at_a_glance(results: dict[str, dict], *, colors: dict[str, str] | None = None,
                     title: str = "") -> Figure:
    """Amata at a glance from stored runs: K_t and alpha_t per epoch, cumulative passes, robust accuracy against time.

    ``results[row]`` are stored results (:func:`amata_lib.infra.results.load_run`) of one seed
    with per-epoch histories, e.g. PGD-10 and Amata of ``mnist-verdict-10k``. Passes and
    seconds include a shared clean warm-up when the run's report records one; seconds
    exclude evaluation (as the trainer measures them).
    """
    if not results:
        raise UserError("results must hold at least one stored run")
    missing = [name for name, r in results.items() if not r.get("history")]
    if missing:
        raise UserError(f"results {missing} have no per-epoch history")
    colors = colors or {name: method_color(name) for name in results}
    fig, (kx, px, rx) = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    ax2 = kx.twinx()
    for name, result in results.items():
        hist = result["history"]
        warm = ((result.get("report") or {}).get("warmup") or {})
        epochs = [r["epoch"] for r in hist]
        colour = colors[name]
        kx.step(epochs, [r["steps"] for r in hist], where="mid", color=colour, label=f"{name}: $K_t$")
        ax2.step(epochs, [r["alpha"] for r in hist], where="mid", color=colour, ls=":", label=rf"{name}: $\alpha_t$")
        px.plot(epochs, [(r["passes"] + warm.get("passes", 0)) / 1000 for r in hist], "o-", ms=3, color=colour,
                label=name)
        rx.plot([(r["time"] + warm.get("time", 0.0)) / 60 for r in hist], [r["robust_acc"] for r in hist], "o-",
                ms=3, color=colour, label=name)
    kx.set(xlabel="epoch", ylabel="PGD steps $K_t$ (solid)", title="the schedule")
    kx.set_ylim(0, max(r["steps"] for res in results.values() for r in res["history"]) + 1)
    ax2.set_ylabel(r"step size $\alpha_t$ (dotted)")
    ax2.set_ylim(0, None)
    px.set(xlabel="epoch", ylabel="cumulative passes (thousands)", title="the cost")
    rx.set(xlabel="training time (minutes)", ylabel="per-epoch PGD-20 accuracy", title="the result")
    for ax in (px, rx):
        ax.legend(fontsize=8)
    handles = kx.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    kx.legend(handles, [h.get_label() for h in handles], fontsize=7, ncol=2, loc="upper center",
              bbox_to_anchor=(0.5, -0.2))  # below the panel: inside, it would hide a step
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------- one palette for the book

PALETTE = {
    "pgd-10": "#1f77b4", "amata": "#ff7f0e", "pgd-2": "#2ca02c", "pgd-2-fixed": "#d62728", "pgd-20": "#9467bd",
    "pgd-40": "#8c564b", "n-fgsm": "#e377c2", "fast": "#7f7f7f", "free": "#bcbd22", "yopo": "#17becf",
    "atta": "#aec7e8", "adaptive": "#98df8a", "adaptive-monotone": "#ffbb78", "fosc": "#c5b0d5",
    "fat": "#c49c94", "erm": "#000000", "pgd-1": "#f7b6d2", "toy": "#555555", "amata-2": "#ffbb78",
}
# One colour per method across every chapter: method_color maps a row's name onto these keys.


def method_color(name: str) -> str:
    """The book's colour of a method, from a row or label name: ``"amata-2-10"``, ``"Amata(2, 10)"``, ``"PGD-10"``.

    Names are lower-cased and ``(2, 10)`` becomes ``-2-10``; an exact key wins, then the
    method family (``amata*`` is Amata, ``pgd-10-travel`` is PGD-10, Amata+ variants such as
    ``amata-free-2-4`` take their base method's colour); anything else is grey.
    """
    key = name.lower().replace("(", "-").replace(")", "").replace(", ", "-").replace(" ", "-").strip("-")
    if key in PALETTE:
        return PALETTE[key]
    for family in ("n-fgsm", "adaptive-monotone", "adaptive", "free", "fast", "yopo", "atta", "fosc", "fat", "erm"):
        if family in key:
            return PALETTE[family]
    if key.startswith("amata"):
        return PALETTE["amata"]
    for pgd in ("pgd-2-fixed", "pgd-10", "pgd-20", "pgd-40", "pgd-2", "pgd-1"):
        if key.startswith(pgd) or key.endswith(pgd.removeprefix("pgd")) and key.startswith("k-"):
            return PALETTE[pgd]
    return "#999999"


def plot_forest(verdicts: dict[str, dict], *, measure: str | None = None, title: str = "") -> Figure:
    """Per-seed cost ratios and their intervals for every compared row of several verdicts (a forest plot).

    ``verdicts[label]`` are :func:`amata_lib.study.verdict.verdict` results. One line per
    row: its per-seed ratios as dots (a bound as a triangle pointing where the true value
    lies, an unknown seed as nothing), the sign interval as a bar (open ends run to the
    edge), and the ERT ratio as a diamond (a bound as a triangle). Log scale; the grey
    band is the paper's [1/3, 1/2], the dotted line a ratio of 1.
    """
    lines = [(label, name, row) for label, v in verdicts.items() for name, row in v["rows"].items() if "costs" in row]
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(lines) + 1.4))
    lo_edge, hi_edge = 0.05, 20.0
    ax.axvspan(1 / 3, 1 / 2, color="#dddddd", zorder=0, label="the paper's claim [1/3, 1/2]")
    ax.axvline(1.0, color="k", ls=":", lw=1)
    for i, (label, name, row) in enumerate(reversed(lines)):
        y = i
        axis = row["costs"][measure or verdicts[label]["protocol"]["measure"]]
        color = method_color(name)
        lo, hi = axis["interval"]
        ax.plot([max(lo, lo_edge), min(hi, hi_edge)], [y, y], color=color, lw=3, alpha=0.6, solid_capstyle="butt")
        for r in axis["per_seed"]:
            if r.kind == "?":
                continue
            marker = {"=": "o", "<=": "<", ">=": ">"}[r.kind]
            ax.plot(min(max(r.value, lo_edge), hi_edge), y + 0.18, marker=marker, color=color, ms=4, ls="none")
        if axis["ratio_kind"] != "?":
            marker = {"=": "D", "<=": "<", ">=": ">"}[axis["ratio_kind"]]
            ax.plot(min(max(axis["ratio"], lo_edge), hi_edge), y, marker=marker, color="k", ms=6, ls="none")
    ax.set_yticks(range(len(lines)))
    ax.set_yticklabels([f"{label}: {name}" for label, name, _ in reversed(lines)], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(lo_edge, hi_edge)
    ax.set_xlabel("cost to the target / the reference's (dots: seeds; bar: sign interval; diamond: ERT ratio)")
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
