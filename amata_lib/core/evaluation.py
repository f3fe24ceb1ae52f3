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

from ..infra.checks import check_int, check_pixels, check_strict_int
from ..infra.data import batches
from ..infra.errors import UserError
from ..infra.nn import eval_mode
from .attacks import AttackerStep, Iterate, check_budget, fgsm, input_grad, pgd_iterates, start_point
from .schedules import step_for

AUTOATTACK_PACKAGE = "pyautoattack"
AUTOATTACK_VERSIONS = ("standard", "plus", "custom")
MASKING_GAP = 0.05
ZERO_GRAD_LIMIT = 0.1
GRADIENT_FREE_N = 200
GRADIENT_FREE_QUERIES = 1000


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
    (:func:`~amata_lib.core.attacks.pgd_iterates` with ``stop``), so only the last iterate
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

    def misclassified(it: Iterate) -> torch.Tensor:
        wrong = it.logits.argmax(1) != it.y
        broken[it.rows[wrong]] = True
        return wrong

    step = AttackerStep(eps, alpha)
    x_adv = start_point(x, step)
    for iterate in pgd_iterates(model, x, y, x_adv, step=step, steps=steps, loss=loss, stop=misclassified):
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
    check_budget(eps, alpha, steps, loss)
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
    attacks : list of str, optional
        Attack names of the package ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t",
        "fab-t"); required for ``version="custom"`` and only then.
    seed : int
        Seed of the attacks' randomness; the global RNG state is restored afterwards.
    batch_size : int
        Examples per attack batch.

    Notes
    -----
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


def input_gradient_stats(model: nn.Module, dataset: Dataset, *, n: int = GRADIENT_FREE_N) -> dict:
    """How many of the first ``n`` examples have an input gradient of the cross-entropy that is all zero or not finite.

    Measured at the clean points, in ``eval()`` mode. An honest network has a non-zero
    gradient almost everywhere; a model that quantises or rounds its input has none, so
    a gradient attack cannot move it -- robustness that is not there (gradient masking).
    Returns ``{"n", "zero_fraction", "nonfinite"}`` (``nonfinite``: a count of examples).
    """
    head = _head(dataset, n)
    zero = nonfinite = 0
    with eval_mode(model) as dev:
        for x, y in batches(head, 512, device=dev):
            g = input_grad(model, x, y, "ce").flatten(1)
            finite = torch.isfinite(g).all(1)
            nonfinite += int((~finite).sum())
            zero += int((finite & (g == 0).all(1)).sum())
    return {"n": len(head), "zero_fraction": zero / len(head), "nonfinite": nonfinite}


def square_accuracy(model: nn.Module, dataset: Dataset, *, eps: float, n: int = GRADIENT_FREE_N,
                    queries: int = GRADIENT_FREE_QUERIES, seed: int = 0, batch_size: int = 256) -> float:
    """Accuracy under the gradient-free Square attack (Andriushchenko et al. 2020) on the first ``n`` examples.

    The L-infinity Square attack of ``pyautoattack`` (the one in AutoAttack's standard
    ensemble) with ``queries`` model evaluations per example (its schedule of square
    sizes rescaled to that budget; AutoAttack's standard ensemble uses 5000) and the
    margin loss. A model whose PGD accuracy lies well above this number fools the
    gradient, not the attack. The global random state is restored afterwards.
    """
    check_strict_int("queries", queries)
    head = _head(dataset, n)
    _import_autoattack()
    from pyautoattack.square import SquareAttack
    correct = 0
    with eval_mode(model) as dev, _frozen(model), _forked_rng(dev), torch.no_grad():
        attack = SquareAttack(model, norm="Linf", n_queries=queries, eps=eps, p_init=0.8, seed=seed,
                              loss="margin", resc_schedule=True, device=dev)
        for x, y in batches(head, batch_size, device=dev):
            check_pixels("x", x)
            x_adv = attack.perturb(x, y)
            correct += int((model(x_adv).argmax(1) == y).sum())
    return correct / len(head)


def masking_reasons(report: dict) -> list[str]:
    """Why a robustness report suggests gradient masking, one sentence each (empty: no sign of it).

    * AutoAttack more than ``MASKING_GAP`` below PGD (its gradient attacks do better);
    * the best gradient attack of the report (PGD on the cross-entropy or on the CW margin) more than
      ``MASKING_GAP`` above the gradient-free Square attack on the same examples (a margin loss can beat
      the cross-entropy on an honest model, so PGD alone would raise false alarms);
    * more than ``ZERO_GRAD_LIMIT`` of the examples with an all-zero input gradient, or any non-finite one.
    """
    reasons = []
    if report.get("autoattack") is not None and report["autoattack"] < report["pgd"] - MASKING_GAP:
        reasons.append(f"AutoAttack leaves {report['autoattack']:.1%}, PGD {report['pgd']:.1%}")
    free = report.get("gradient_free")
    if free and free["acc"] < min(free["pgd_acc"], free["cw_acc"]) - MASKING_GAP:
        reasons.append(f"PGD and CW leave {min(free['pgd_acc'], free['cw_acc']):.1%} of the first {free['n']} "
                       f"examples, the gradient-free Square attack ({free['queries']} queries) {free['acc']:.1%}")
    grads = report.get("input_gradients")
    if grads and (grads["zero_fraction"] > ZERO_GRAD_LIMIT or grads["nonfinite"]):
        reasons.append(f"{grads['zero_fraction']:.0%} of {grads['n']} examples have an all-zero input gradient and "
                       f"{grads['nonfinite']} a non-finite one")
    return reasons


def robustness_report(model: nn.Module, dataset: Dataset, *, eps: float, alpha: float | None = None,
                      pgd_steps: int = 20, pgd_restarts: int = 1, cw_steps: int = 20,
                      autoattack_n: int = 1000, autoattack_version: str = "standard",
                      autoattack_attacks: Sequence[str] | None = None, seed: int = 0,
                      gradient_free_n: int = GRADIENT_FREE_N,
                      gradient_free_queries: int = GRADIENT_FREE_QUERIES) -> dict:
    """Clean, PGD, CW and AutoAttack accuracy on one fixed subset, and three checks for gradient masking.

    All four accuracies use the first ``autoattack_n`` examples of ``dataset`` so that
    they are comparable. PGD and CW use step ``alpha`` (default ``2.5 * eps / steps``,
    the trainer's evaluation rule) and a random start seeded by ``seed``.

    Gradient masking (:func:`masking_reasons`): AutoAttack against PGD; the gradient-free
    Square attack (:func:`square_accuracy`, ``gradient_free_queries`` queries) against PGD
    and CW on the first ``gradient_free_n`` examples; and the input gradients themselves
    (:func:`input_gradient_stats`). ``MASKING_GAP = 0.05``: on a model with honest
    gradients the ensemble lands at most a few points below PGD-20 and PGD below a
    1000-query Square attack. The thresholds are heuristics, not tests: on a few hundred
    examples one example is 0.2-0.5 points, and a single-restart PGD-20 can be more than
    5 points too optimistic without any masking (seen on a PGD-trained digits model at
    ``eps = 0.2``, where even the black-box Square attack beats it), so raise
    ``pgd_restarts`` before reading the flag as masking.

    Returns
    -------
    dict
        ``n``, ``clean``, ``pgd``, ``cw``, ``autoattack``, ``gradient_free`` (``attack``,
        ``queries``, ``n``, ``acc``, and ``pgd_acc``, ``cw_acc`` on the same examples), ``input_gradients``
        (:func:`input_gradient_stats`), ``gradient_masking_suspect``, ``masking_reasons``
        and ``autoattack_flags`` (messages of AutoAttack's reliability checks).
    """
    subset = _head(dataset, autoattack_n)
    clean = accuracy(model, subset)
    free_set = _head(subset, gradient_free_n)
    step = (lambda k: step_for(eps, k)) if alpha is None else (lambda k: alpha)
    with _forked_rng(next(model.parameters()).device):
        torch.manual_seed(seed)
        robust = pgd_accuracy(model, subset, eps=eps, alpha=step(pgd_steps), steps=pgd_steps, restarts=pgd_restarts)
        cw = cw_accuracy(model, subset, eps=eps, alpha=step(cw_steps), steps=cw_steps, restarts=pgd_restarts)
        torch.manual_seed(seed)
        robust_free = pgd_accuracy(model, free_set, eps=eps, alpha=step(pgd_steps), steps=pgd_steps,
                                   restarts=pgd_restarts)
        cw_free = cw_accuracy(model, free_set, eps=eps, alpha=step(cw_steps), steps=cw_steps, restarts=pgd_restarts)
    aa, flags = _autoattack(model, subset, eps=eps, n=len(subset), version=autoattack_version,
                            attacks=autoattack_attacks, seed=seed, batch_size=256)
    report = {"n": len(subset), "clean": clean, "pgd": robust, "cw": cw, "autoattack": aa,
              "gradient_free": {"attack": "square", "queries": gradient_free_queries, "n": len(free_set),
                                "acc": square_accuracy(model, free_set, eps=eps, n=len(free_set),
                                                       queries=gradient_free_queries, seed=seed),
                                "pgd_acc": robust_free, "cw_acc": cw_free},
              "input_gradients": input_gradient_stats(model, free_set, n=len(free_set))}
    report["masking_reasons"] = masking_reasons(report)
    report["gradient_masking_suspect"] = bool(report["masking_reasons"])
    report["autoattack_flags"] = flags
    return report
