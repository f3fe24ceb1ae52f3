"""Loss landscapes of the inner maximization (the paper's Figure 1), measured.

For one clean input ``x`` with label ``y`` the inner problem is
``max_{||x' - x||_inf <= eps} l(h_theta(x'), y)``. This module

* spans a 2-D :class:`Plane` through ``x``: axis ``u`` is the FGSM step, axis ``v``
  a random direction orthogonal to it with the same Euclidean length;
* evaluates the loss on a grid of that plane (:func:`loss_grid`);
* records the iterates of PGD (:func:`pgd_trajectory`) and maps them to plane
  coordinates (:func:`project_onto_plane`);
* measures how steep the landscape is at many inputs: the dual (L1) norm of the
  input gradient, the curvature along the ascent direction, and the step length
  over which the loss stays close to linear (:func:`steepness`, :func:`summarize`);
* keeps copies of the weights at chosen epochs of :func:`amata_lib.train`
  (:func:`snapshot_callback`) and rebuilds those models (:func:`models_at`).

Every function takes the model as it is (the caller picks ``eval()``), never
writes into parameter gradients, and works on a batch ``x`` of shape ``N x ...``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from ..core.attacks import AttackerStep, attack_loss, check_budget, fgsm, input_grad, pgd_iterates, start_point
from ..infra.checks import check_pixels, check_real, check_strict_int
from ..infra.errors import UserError


def _check_eps(eps: float) -> None:
    check_real("eps", eps, minimum=0, strict=True)


@dataclass(frozen=True)
class Plane:
    """A 2-D plane ``x + a * u + b * v`` through a single clean input ``x`` (shape ``1 x ...``).

    ``u`` and ``v`` have the shape of ``x``; they are orthogonal and equally long in
    the flattened (Euclidean) space, so the plane's coordinates are not distorted.
    """

    u: torch.Tensor
    v: torch.Tensor

    def basis(self) -> torch.Tensor:
        """The two axes flattened as the columns of a ``D x 2`` matrix."""
        return torch.stack([self.u.flatten(), self.v.flatten()], dim=1)

    def points(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Inputs ``x + a_i u + b_i v`` for 1-D coordinate tensors ``a``, ``b``, clipped to ``[0, 1]``."""
        shape = (-1,) + (1,) * (x.dim() - 1)
        return (x + a.view(shape) * self.u + b.view(shape) * self.v).clamp(0.0, 1.0)


def plane(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0,
          loss: str = "ce") -> Plane:
    """The plane of the paper's Figure 1 through one input: FGSM axis ``u``, random axis ``v``.

    Scaling (exact): ``u = fgsm(x) - x``, the FGSM step as actually taken, i.e.
    ``eps * sign(grad_x l)`` clipped to the image box ``[0, 1]``. Where no pixel sits
    at the box edge this is exactly ``eps * sign(g)``, so coordinate ``a = 1`` is
    the FGSM corner of the eps-ball and ``a = -1`` the opposite corner. On images
    with saturated pixels (digits, MNIST) some entries of ``eps * sign(g)`` point
    out of the box; leaving them in would place the FGSM point itself off the axis.

    ``v`` is a standard normal draw (generator seeded with ``seed``) made orthogonal
    to ``u`` by one Gram-Schmidt step in the flattened space and rescaled to
    ``||v||_2 = ||u||_2``. ``v`` is not a corner of the ball: its entries vary in
    size, and some exceed ``eps`` in magnitude.

    Parameters
    ----------
    model : nn.Module
        Classifier on inputs in ``[0, 1]``.
    x, y : torch.Tensor
        One clean input (shape ``1 x ...``) and its label (shape ``1``).
    eps : float
        L-infinity radius (pixel units), > 0.
    seed : int
        Seed of the random axis.
    loss : {"ce", "cw"}
        Loss whose gradient defines ``u``.
    """
    _check_eps(eps)
    if x.shape[0] != 1 or y.shape != (1,):
        raise UserError(f"x must hold one input (shape 1 x ...), got x.shape={tuple(x.shape)}")
    u = fgsm(model, x, y, eps=eps, loss=loss) - x.detach()
    if not u.any():
        raise UserError("the input gradient is zero on every free pixel; the plane has no FGSM axis")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    r = torch.randn(u.shape, generator=gen, dtype=u.dtype).to(u.device)
    r = r - (r * u).sum() / (u * u).sum() * u
    return Plane(u=u, v=r * (u.norm() / r.norm()))


def loss_grid(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plane: Plane, n: int = 41,
              loss: str = "ce", batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The loss on an ``n x n`` grid of the plane, coordinates ``(a, b)`` in ``[-1, 1]^2``.

    Every grid point ``x + a u + b v`` is clipped to the image box ``[0, 1]`` before
    the model sees it (our choice; the paper's figure shows the raw landscape).
    Attacks only ever visit points inside the box, so the clipped landscape is the
    one they climb; it is flat in the directions where the box clips. With the
    scaling of :func:`plane`, the value at ``(a, b) = (1, 0)`` is the loss of the
    FGSM example.

    Returns
    -------
    a, b : np.ndarray
        The 1-D coordinate axes (``n`` values each, from -1 to 1).
    values : np.ndarray
        ``values[j, i]`` = loss at ``(a[i], b[j])`` (rows follow ``b``, as
        ``matplotlib``'s ``contourf(a, b, values)`` expects).
    """
    check_strict_int("n", n, minimum=2)
    axis = torch.linspace(-1.0, 1.0, n, dtype=x.dtype, device=x.device)
    bb, aa = torch.meshgrid(axis, axis, indexing="ij")
    a_flat, b_flat = aa.flatten(), bb.flatten()
    values = []
    with torch.no_grad():
        for i in range(0, n * n, batch_size):
            pts = plane.points(x, a_flat[i:i + batch_size], b_flat[i:i + batch_size])
            values.append(attack_loss(model(pts), y.expand(len(pts)), loss))
    return axis.cpu().numpy(), axis.cpu().numpy(), torch.cat(values).view(n, n).cpu().numpy()


@dataclass(frozen=True)
class Trajectory:
    """PGD iterates ``points[k]`` = ``x^k`` (shape ``(K+1) x N x ...``) and their losses (``(K+1) x N``)."""

    points: torch.Tensor
    losses: torch.Tensor


def pgd_trajectory(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
                   steps: int, random_start: bool = False, loss: str = "ce") -> Trajectory:
    """The iterates ``x^0 .. x^K`` of L-infinity PGD and the attack loss each one reaches.

    The same iteration as :func:`amata_lib.core.attacks.pgd` (same gradient, same
    :func:`~amata_lib.core.attacks.project`, same draw of the random start), so
    ``points[-1]`` equals ``pgd(model, x, y, eps=eps, alpha=alpha, steps=steps,
    random_start=random_start, loss=loss)`` -- exactly when ``random_start=False``,
    and for ``random_start=True`` when both start from the same torch RNG state.
    Costs one extra forward pass per iterate for the losses.
    """
    check_budget(eps, alpha, steps, loss)
    check_pixels("x", x)
    x = x.detach()
    if eps == 0:  # every iterate is x, as pgd returns
        points = [x.clone()] * (steps + 1)
    else:
        step = AttackerStep(eps, alpha)
        start = start_point(x, step, random_start=random_start)
        points = [start, *pgd_iterates(model, x, y, start, step=step, steps=steps, loss=loss)]
    stacked = torch.stack(points).detach()
    with torch.no_grad():
        losses = torch.stack([attack_loss(model(p), y, loss) for p in stacked])
    return Trajectory(points=stacked, losses=losses)


def project_onto_plane(points: torch.Tensor, x: torch.Tensor, plane: Plane) -> torch.Tensor:
    """Plane coordinates ``(a, b)`` of each point: least squares ``min ||p - x - a u - b v||_2``.

    ``points`` has shape ``M x ...`` (inputs shaped like ``x``, e.g. one trajectory's
    iterates ``trajectory.points[:, 0]``); returns an ``M x 2`` tensor. Points off the
    plane are mapped to their orthogonal projection; see :func:`off_plane_fraction`.
    """
    if points.shape[1:] != x.shape[1:]:
        raise UserError(f"points must have shape M x {tuple(x.shape[1:])}, got {tuple(points.shape)}")
    diff = (points - x).flatten(1).T
    return torch.linalg.lstsq(plane.basis(), diff).solution.T


def off_plane_fraction(points: torch.Tensor, x: torch.Tensor, plane: Plane) -> torch.Tensor:
    """``||residual|| / ||p - x||`` per point: 0 = in the plane, 1 = orthogonal to it (0 at ``p = x``)."""
    coords = project_onto_plane(points, x, plane)
    diff = (points - x).flatten(1)
    residual = diff - coords @ plane.basis().T
    return residual.norm(dim=1) / diff.norm(dim=1).clamp_min(torch.finfo(diff.dtype).tiny)


def directional_curvature(model: nn.Module, x: torch.Tensor, y: torch.Tensor, d: torch.Tensor,
                          loss: str = "ce") -> torch.Tensor:
    """Per-example ``d_i^T H_i d_i / ||d_i||^2`` with ``H_i`` the input Hessian of the loss.

    Computed exactly by one Hessian-vector product (double backward through
    ``g . d``, ``g`` the per-example input gradient; examples are independent in
    ``eval()`` mode), without forming ``H``. For ReLU networks with max-pooling
    the logits are piecewise linear in ``x``, so the curvature comes from the
    softmax cross-entropy alone and is >= 0 (its Hessian in the logits is
    positive semi-definite); for the CW margin it is 0 almost everywhere.
    """
    if d.shape != x.shape:
        raise UserError(f"d must have the shape of x {tuple(x.shape)}, got {tuple(d.shape)}")
    d = d.detach()
    with torch.enable_grad():
        x_leaf = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(attack_loss(model(x_leaf), y, loss).sum(), x_leaf, create_graph=True)
        (hd,) = torch.autograd.grad((g * d).sum(), x_leaf, allow_unused=True)
    if hd is None:  # the gradient does not depend on x at all: zero curvature
        hd = torch.zeros_like(d)
    num = (hd * d).flatten(1).sum(1)
    return (num / d.flatten(1).pow(2).sum(1).clamp_min(torch.finfo(d.dtype).tiny)).detach()


def steepness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> dict[str, torch.Tensor]:
    """Per-example steepness of the inner problem at the clean inputs (each entry has shape ``N``).

    Along PGD's step direction ``d = sign(g)``, ``g = grad_x l``, the loss has the
    second-order model ``l(x + alpha d) ~ l(x) + alpha ||g||_1 + alpha^2 / 2 * d^T H d``.

    * ``grad_l1`` = ``||g||_1``, the dual norm of L-infinity: the first-order gain per
      unit of signed step.
    * ``curvature`` = ``d^T H d / ||d||_2^2`` (:func:`directional_curvature`).
    * ``linear_range`` = ``2 ||g||_1 / |d^T H d|``: the step length at which the
      quadratic term is as large as the linear one, i.e. beyond which a signed
      step no longer behaves like the linearised (FGSM) model. ``inf`` where the
      curvature is 0.
    """
    g = input_grad(model, x, y, loss)
    d = g.sign()
    grad_l1 = g.flatten(1).abs().sum(1)
    curvature = directional_curvature(model, x, y, d, loss)
    quadratic = (curvature * d.flatten(1).pow(2).sum(1)).abs()
    return {"grad_l1": grad_l1, "curvature": curvature, "linear_range": 2 * grad_l1 / quadratic}


def summarize(values: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Mean, standard deviation and quartiles (``q25``, ``median``, ``q75``) of a 1-D sample."""
    arr = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise UserError(f"values must be a non-empty 1-D sample, got shape {arr.shape}")
    q25, median, q75 = np.percentile(arr, [25, 50, 75])
    return {"mean": float(arr.mean()), "std": float(arr.std()), "q25": float(q25),
            "median": float(median), "q75": float(q75)}


def snapshot_callback(epochs: Iterable[int]) -> tuple[Callable[[dict, nn.Module], None], dict[int, dict]]:
    """A :func:`amata_lib.train` callback keeping a copy of the weights after the chosen epochs.

    Returns ``(callback, states)``; after training, ``states[e]`` is the model's
    ``state_dict`` (tensors cloned to CPU) at the end of epoch ``e`` (1-based, as
    in the history records). Epochs training never reaches are simply absent.
    """
    wanted = set()
    for e in epochs:
        check_strict_int("epochs", e)
        wanted.add(e)
    states: dict[int, dict] = {}

    def callback(record: dict, model: nn.Module) -> None:
        if record["epoch"] in wanted:
            states[record["epoch"]] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    return callback, states


def models_at(states: dict[int, dict], make_model: Callable[[], nn.Module]) -> Iterator[tuple[int, nn.Module]]:
    """``(epoch, model)`` for each snapshot of :func:`snapshot_callback`, in epoch order, in ``eval()`` mode."""
    for epoch in sorted(states):
        model = make_model()
        model.load_state_dict(states[epoch])
        yield epoch, model.eval()
