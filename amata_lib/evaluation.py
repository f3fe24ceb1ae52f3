"""Clean and robust accuracy: PGD, FGSM, CW, AutoAttack, and a robustness report.

Every function evaluates in ``eval()`` mode, in fp32, and restores the model's
previous mode afterwards. :func:`autoattack_accuracy` runs AutoAttack (Croce & Hein,
2020) from the optional ``pyautoattack`` package (``pip install 'amata-lib[autoattack]'``).
"""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from ._checks import check_int, check_pixels, check_strict_int
from ._nn import eval_mode
from .attacks import _check_budget, fgsm, pgd_iterates, pgd_start
from .data import batches
from .errors import UserError

AUTOATTACK_PACKAGE = "pyautoattack"
AUTOATTACK_VERSIONS = ("standard", "plus", "custom")
MASKING_GAP = 0.05




def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> float:
    """Fraction of ``dataset`` the model classifies correctly."""
    correct = total = 0
    with eval_mode(model) as dev, torch.no_grad():
        for x, y in batches(dataset, batch_size, device=dev):
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def pgd_broken(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
               loss: str = "ce") -> torch.Tensor:
    """Which examples one PGD run from a uniform random start breaks: misclassified at *any* iterate.

    The run looks at every point ``x^0 .. x^K`` it visits. An example misclassified at
    some point is frozen there (it leaves the batch: no further passes) and counts as
    broken, even if later steps would have led back to the right class. The check of
    ``x^k`` uses the logits of the gradient pass at ``x^k``
    (:func:`~amata_lib.attacks.pgd_iterates` with ``stop``), so only the last iterate
    costs one extra forward pass, for the examples not yet broken. Call it in the mode
    you evaluate in (:func:`pgd_accuracy` uses ``eval()``).

    Returns
    -------
    torch.Tensor
        Boolean mask over the batch, ``True`` where some iterate is misclassified.

    Notes
    -----
    original | ours | why, against Wong et al.'s ``attack_pgd``
    (locuslab/fast_adversarial, ``CIFAR10/utils.py`` and ``MNIST/evaluate_mnist.py``):

    * within a restart: examples misclassified at the current iterate are frozen and
      the final delta is scored | same freeze; the example is counted broken at the
      first misclassified iterate | identical outcome, and no pass is spent on it later;
    * across restarts: per example the restart with the highest final cross-entropy is
      kept and scored once | :func:`pgd_accuracy` counts an example broken if *any*
      restart breaks it | a correct restart can have a higher loss than a fooled one,
      so theirs can miss a break that ours counts: ours is at least as strong;
    * their loop breaks when no example is correct | ours when none is left moving | same.
    """
    x, y = x.detach(), y.detach()
    broken = torch.zeros(len(y), dtype=torch.bool, device=y.device)

    def misclassified(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        wrong = logits.argmax(1) != y[rows]
        broken[rows[wrong]] = True
        return wrong

    x_adv = pgd_start(x, eps)
    for iterate in pgd_iterates(model, x, y, x_adv, eps=eps, alpha=alpha, steps=steps, loss=loss,
                                stop=misclassified):
        x_adv = iterate
    rest = (~broken).nonzero().squeeze(1)
    if len(rest):
        with torch.no_grad():
            broken[rest] = model(x_adv[rest]).argmax(1) != y[rest]
    return broken


def pgd_accuracy(model: nn.Module, dataset: Dataset, *, eps: float, alpha: float, steps: int,
                 restarts: int = 1, loss: str = "ce", batch_size: int = 512) -> float:
    """Accuracy under PGD-``steps``: an example counts only if no iterate of any restart fools the model.

    Each restart begins from a fresh uniform random start and runs :func:`pgd_broken`
    on the examples still robust; an example misclassified at any point any restart
    visits is wrong (worst case per example over steps and restarts). Examples the
    model already gets wrong clean count as wrong. See :func:`pgd_broken` for how this
    compares with Wong et al.'s ``attack_pgd``.
    """
    check_int("restarts", restarts)
    _check_budget(eps, alpha, steps, loss)
    correct = total = 0
    with eval_mode(model) as dev:
        for x, y in batches(dataset, batch_size, device=dev):
            check_pixels("x", x)
            with torch.no_grad():
                robust = model(x).argmax(1) == y
            for _ in range(restarts):
                idx = robust.nonzero().squeeze(1)
                if len(idx) == 0:
                    break
                robust[idx] = ~pgd_broken(model, x[idx], y[idx], eps=eps, alpha=alpha, steps=steps, loss=loss)
            correct += int(robust.sum())
            total += len(y)
    return correct / total


def fgsm_accuracy(model: nn.Module, dataset: Dataset, *, eps: float, batch_size: int = 512) -> float:
    """Accuracy under FGSM: one signed step of ``eps`` from the clean input (no random start)."""
    correct = total = 0
    with eval_mode(model) as dev:
        for x, y in batches(dataset, batch_size, device=dev):
            x_adv = fgsm(model, x, y, eps=eps)
            with torch.no_grad():
                correct += int((model(x_adv).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def cw_accuracy(model: nn.Module, dataset: Dataset, *, eps: float, alpha: float, steps: int = 20,
                restarts: int = 1, batch_size: int = 512) -> float:
    """Accuracy under the CW attack of the paper's Table 2: PGD on the Carlini-Wagner margin loss."""
    return pgd_accuracy(model, dataset, eps=eps, alpha=alpha, steps=steps, restarts=restarts,
                        loss="cw", batch_size=batch_size)


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring gradients, so an attack that calls ``backward`` cannot write ``.grad``."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


class _Collect(logging.Handler):
    """Keeps the messages AutoAttack logs at WARNING level (its reliability checks)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _head(dataset: Dataset, n: int) -> TensorDataset:
    """The first ``n`` examples of ``dataset`` (a fixed subset) as a ``TensorDataset``."""
    check_strict_int("n", n)
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[:n] for t in dataset.tensors))
    xs, ys = zip(*(dataset[i] for i in range(min(n, len(dataset)))))
    return TensorDataset(torch.stack(xs), torch.as_tensor(ys))


@contextmanager
def _forked_rng(device: torch.device) -> Iterator[None]:
    """Restore the CPU (and ``device``'s CUDA) random state on exit."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


def _import_autoattack():
    try:
        from pyautoattack import AutoAttack
    except ImportError as err:
        raise ImportError(f"AutoAttack needs the {AUTOATTACK_PACKAGE!r} package: "
                          f"pip install '{AUTOATTACK_PACKAGE}==0.2.0' "
                          "(or the project's 'autoattack' extra)") from err
    return AutoAttack


def _autoattack(model: nn.Module, dataset: Dataset, *, eps: float, n: int, version: str,
                attacks: Sequence[str] | None, seed: int, batch_size: int) -> tuple[float, list[str]]:
    """Robust accuracy under AutoAttack and the warnings of its reliability checks."""
    head = _head(dataset, n)
    if version not in AUTOATTACK_VERSIONS:
        raise UserError(f"version must be one of {AUTOATTACK_VERSIONS}, got {version!r}")
    if (attacks is None) != (version != "custom"):
        raise UserError(f"attacks must be given exactly when version='custom', got {attacks!r}")
    AutoAttack = _import_autoattack()
    log, collect = logging.getLogger("auto-attack"), _Collect()
    propagate, log.propagate = log.propagate, False
    log.addHandler(collect)
    try:
        with eval_mode(model) as dev, _frozen(model), _forked_rng(dev):
            x, y = (t.to(dev) for t in head.tensors)
            adversary = AutoAttack(model, attacks=None if attacks is None else list(attacks), device=dev,
                                   eps=eps, norm="Linf", seed=seed, version=version)
            if version == "custom":  # one restart per attack, as the standard version runs them
                adversary.apgd.n_restarts = adversary.fab.n_restarts = 1
            _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    finally:
        log.removeHandler(collect)
        log.propagate = propagate
    return int((y_adv == y).sum()) / len(y), collect.messages


def autoattack_accuracy(model: nn.Module, dataset: Dataset, *, eps: float, n: int = 1000,
                        version: str = "standard", attacks: Sequence[str] | None = None,
                        seed: int = 0, batch_size: int = 256) -> float:
    """Accuracy under AutoAttack (L-infinity) on the first ``n`` examples of ``dataset``.

    Runs the package ``pyautoattack`` (a PyPI release of Croce & Hein's reference code,
    https://github.com/fra31/auto-attack). An example counts as robust only if every
    attack of the ensemble fails on it; examples misclassified clean count as wrong.

    Parameters
    ----------
    model : nn.Module
        Classifier on inputs in ``[0, 1]``, returning logits.
    dataset : Dataset
        Evaluation set; its first ``n`` examples form the fixed subset.
    eps : float
        L-infinity radius.
    n : int
        Subset size (all of ``dataset`` if it is smaller).
    version : {"standard", "plus", "custom"}
        ``"standard"``: APGD-CE, targeted APGD-DLR, targeted FAB, Square (5000 queries);
        ``"custom"`` runs only ``attacks`` (e.g. ``["apgd-ce"]``), each with one restart
        as in the standard version.
    attacks : sequence of str, optional
        Attack names of the package ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t",
        "fab-t"); required for ``version="custom"`` and only then.
    seed : int
        Seed of the attacks' randomness; the global RNG state is restored afterwards.
    batch_size : int
        Examples per attack batch.

    Warnings from AutoAttack's own checks (e.g. zero gradients, randomised or dynamic
    defence) are re-issued as :class:`RuntimeWarning`; the model's mode and parameter
    gradients are left as they were.

    Raises
    ------
    ImportError
        ``pyautoattack`` is not installed.
    """
    acc, messages = _autoattack(model, dataset, eps=eps, n=n, version=version, attacks=attacks,
                                seed=seed, batch_size=batch_size)
    for message in messages:
        warnings.warn(f"AutoAttack: {message}", RuntimeWarning, stacklevel=2)
    return acc


def robustness_report(model: nn.Module, dataset: Dataset, *, eps: float, alpha: float | None = None,
                      pgd_steps: int = 20, pgd_restarts: int = 1, cw_steps: int = 20,
                      autoattack_n: int = 1000, autoattack_version: str = "standard",
                      autoattack_attacks: Sequence[str] | None = None, seed: int = 0) -> dict:
    """Clean, PGD, CW and AutoAttack accuracy on one fixed subset, with a gradient-masking flag.

    All four accuracies use the first ``autoattack_n`` examples of ``dataset`` so that
    they are comparable. PGD and CW use step ``alpha`` (default ``2.5 * eps / steps``,
    the trainer's evaluation rule) and a random start seeded by ``seed``.

    ``gradient_masking_suspect`` is ``autoattack < pgd - MASKING_GAP`` with
    ``MASKING_GAP = 0.05``: AutoAttack is an ensemble that contains a PGD-like attack,
    so on a model with honest gradients it should land at most a few points below
    PGD-20; a gap of more than 5 points (absolute) means PGD was misled, the usual
    sign of gradient masking. The threshold is a heuristic, not a test: on a few
    hundred examples one example is 0.2-0.3 points, and a single-restart PGD-20 can
    be more than 5 points too optimistic without any masking (seen on a PGD-trained
    digits model at ``eps = 0.2``, where even the black-box Square attack beats it),
    so raise ``pgd_restarts`` before reading the flag as masking.

    Returns
    -------
    dict
        ``n``, ``clean``, ``pgd``, ``cw``, ``autoattack``, ``gradient_masking_suspect``
        and ``autoattack_flags`` (messages of AutoAttack's reliability checks).
    """
    subset = _head(dataset, autoattack_n)
    clean = accuracy(model, subset)
    with _forked_rng(next(model.parameters()).device):
        torch.manual_seed(seed)
        robust = pgd_accuracy(model, subset, eps=eps, alpha=2.5 * eps / pgd_steps if alpha is None else alpha,
                              steps=pgd_steps, restarts=pgd_restarts)
        cw = cw_accuracy(model, subset, eps=eps, alpha=2.5 * eps / cw_steps if alpha is None else alpha,
                         steps=cw_steps, restarts=pgd_restarts)
    aa, flags = _autoattack(model, subset, eps=eps, n=len(subset), version=autoattack_version,
                            attacks=autoattack_attacks, seed=seed, batch_size=256)
    return {"n": len(subset), "clean": clean, "pgd": robust, "cw": cw, "autoattack": aa,
            "gradient_masking_suspect": aa < robust - MASKING_GAP, "autoattack_flags": flags}
