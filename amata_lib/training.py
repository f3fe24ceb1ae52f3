"""Adversarial training driven by a schedule (which plan in which epoch) and an inner maximizer.

One epoch of :func:`train` is the paper's Algorithm 1 with ``schedule(t)`` giving
``(K_t, alpha_t)``: for each minibatch the maximizer builds the adversarial batch,
then one SGD/Adam step is taken on it. ``schedule=None`` is plain ERM.

Attack mode: the trainer switches the model to ``eval()`` while the maximizer runs
and back to ``train()`` for the parameter step. Batch-norm running statistics are
therefore updated once per minibatch (by the step that trains), not ``K`` more times
by attack passes, and dropout does not randomise the attack's gradient. The attack
functions themselves never change the mode.
"""
from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .evaluation import accuracy, pgd_accuracy
from .maximizers import Clean, PGDMaximizer
from .schedules import Schedule

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "multistep", "cosine")
Callback = Callable[[dict, nn.Module], Any]


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; anything else is passed to :class:`torch.device`."""
    if str(device) != "auto":
        try:
            return torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"device {device!r} is not a valid torch device: {exc}") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def batches(dataset: Dataset, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None, device: torch.device | None = None
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Minibatches ``(x, y)`` on ``device``; a ``TensorDataset`` is sliced directly (no worker overhead)."""
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        n = len(y)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                            num_workers=min(8, os.cpu_count() or 1), pin_memory=device is not None
                            and device.type == "cuda", persistent_workers=False)
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def make_optimizer(model: nn.Module, optimizer: str, lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """SGD (with momentum) or Adam over all parameters."""
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")


def make_lr_schedule(opt: torch.optim.Optimizer, lr_schedule: str, epochs: int
                     ) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch learning-rate schedule: constant, multistep (x0.1 at 50 % and 75 % of epochs), cosine."""
    if lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    if lr_schedule == "multistep":
        milestones = sorted({max(1, epochs // 2), max(1, (3 * epochs) // 4)})
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    if lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")


def _subset(dataset: Dataset, n: int | None) -> Dataset:
    if n is None or n >= len(dataset):
        return dataset
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[:n] for t in dataset.tensors))
    return torch.utils.data.Subset(dataset, range(n))


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _tidy(passes: float) -> int | float:
    """Pass counts stay integers when they are (PGD, ERM); early-stopping methods give fractions."""
    return int(passes) if float(passes).is_integer() else round(passes, 3)


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def train(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    *,
    epochs: int,
    eps: float,
    schedule: Schedule | None = None,
    maximizer: Any = None,
    optimizer: str = "sgd",
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    lr_schedule: str = "constant",
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "auto",
    amp: bool = False,
    eval_steps: int = 20,
    eval_alpha: float | None = None,
    eval_restarts: int = 1,
    eval_subset: int | None = None,
    eval_every: int = 1,
    checkpoint: str | os.PathLike | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> list[dict]:
    """Train ``model`` in place by ERM (``schedule=None``) or schedule-driven adversarial training.

    Parameters
    ----------
    model : nn.Module
        Classifier on inputs in [0, 1]; moved to ``device``.
    train_set, test_set : Dataset
        Pairs ``(x, y)``; ``TensorDataset`` is fastest.
    epochs : int
        Number of epochs T; the schedule must cover at least ``epochs``.
    eps : float
        L-infinity radius of the threat model, used for training and the robust test.
    schedule : Schedule, optional
        Plan ``(K_t, alpha_t)`` per epoch; ``None`` trains on clean data (ERM).
    maximizer : callable, optional
        Inner maximizer; defaults to :class:`PGDMaximizer` with ``eps`` (or :class:`Clean` for ERM).
        Protocol: ``maximizer(model, x, y, plan) -> x_adv``; ``maximizer.passes(plan)`` gives the
        forward+backward passes its last call spent (may be fractional for methods that stop
        early on part of the batch); an optional ``maximizer.start_epoch(t, epochs)`` is called
        at the start of every epoch (for methods whose state depends on the epoch).
    optimizer, lr, momentum, weight_decay, lr_schedule
        Outer optimiser (``sgd`` or ``adam``) and its per-epoch learning-rate schedule.
    batch_size, seed, device
        Minibatch size; seed of weights' init order, shuffling and random starts;
        ``"auto"`` = cuda, then mps, then cpu.
    amp : bool
        bf16 autocast for the attack and the training step (CUDA only); tests run in fp32.
    eval_steps, eval_alpha, eval_restarts, eval_subset, eval_every
        Robust test: PGD-``eval_steps`` (step ``eval_alpha``, default ``2.5 * eps / eval_steps``),
        worst case over restarts, on the first ``eval_subset`` test examples, every
        ``eval_every`` epochs and after the last. Evaluation uses its own RNG stream, so
        it does not change the training trajectory.
    checkpoint : path, optional
        File written atomically after every epoch; if it exists at start, training
        resumes after its last epoch and ends where an uninterrupted run would.
    callback : callable, optional
        ``callback(record, model)`` after each epoch; returning ``True`` stops training.
    progress : bool
        Show a tqdm bar over minibatches (stderr).

    Returns
    -------
    list of dict
        One record per epoch: ``epoch``, ``steps``, ``alpha`` (0 for ERM), ``lr``,
        ``epoch_time`` and cumulative ``time`` (seconds of training, evaluation
        excluded, CUDA-synchronised), cumulative ``passes`` (minibatch forward+backward
        passes; a pass on part of a minibatch counts as that fraction), ``train_loss``, ``clean_acc`` and ``robust_acc`` (None on epochs
        without evaluation).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"epochs must be an integer > 0, got {epochs!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if schedule is not None and schedule.epochs < epochs:
        raise ValueError(f"schedule covers {schedule.epochs} epochs but epochs={epochs}")
    _check_positive("lr", lr)
    for name, value in (("batch_size", batch_size), ("eval_steps", eval_steps),
                        ("eval_restarts", eval_restarts), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be an integer > 0, got {value!r}")
    dev = select_device(device)
    if amp and dev.type != "cuda":
        raise ValueError(f"amp (bf16 autocast) needs a CUDA device, got device={dev.type!r}")
    if maximizer is None:
        maximizer = Clean() if schedule is None else PGDMaximizer(eps)
    eval_alpha = 2.5 * eps / eval_steps if eval_alpha is None else eval_alpha
    test_eval = _subset(test_set, eval_subset)

    seed_everything(seed)
    model.to(dev)
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay)
    sched = make_lr_schedule(opt, lr_schedule, epochs)
    shuffle_gen = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    start_epoch = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["lr_schedule"])
        shuffle_gen.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        if dev.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        history = state["history"]
        start_epoch = len(history)
        if history and history[-1].get("stopped"):
            return history

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else torch.autocast("cpu", enabled=False)
    n_batches = math.ceil(len(train_set) / batch_size)
    for t in range(start_epoch, epochs):
        plan = schedule(t) if schedule is not None else None
        if hasattr(maximizer, "start_epoch"):
            maximizer.start_epoch(t, epochs)
        epoch_passes = 0.0
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=n_batches, desc=f"epoch {t + 1}/{epochs}", leave=False)
        synchronize(dev)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=dev)
        n_seen = 0
        for x, y in batches(train_set, batch_size, shuffle=True, generator=shuffle_gen, device=dev):
            with autocast:
                if plan is not None:
                    model.eval()
                    x = maximizer(model, x, y, plan)
                    epoch_passes += maximizer.passes(plan)
                model.train()
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch_passes += 1
            loss_sum += loss.detach().float() * len(y)
            n_seen += len(y)
            if bar is not None:
                bar.update(1)
        synchronize(dev)
        epoch_time = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        record = {
            "epoch": t + 1,
            "steps": plan.steps if plan is not None else 0,
            "alpha": plan.alpha if plan is not None else 0.0,
            "lr": opt.param_groups[0]["lr"],
            "epoch_time": epoch_time,
            "time": (history[-1]["time"] if history else 0.0) + epoch_time,
            "passes": _tidy((history[-1]["passes"] if history else 0) + epoch_passes),
            "train_loss": float(loss_sum) / max(n_seen, 1),
            "clean_acc": None,
            "robust_acc": None,
        }
        sched.step()
        if (t + 1) % eval_every == 0 or t + 1 == epochs:
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                torch.manual_seed(seed + 1)
                record["clean_acc"] = accuracy(model, test_eval, batch_size=512)
                record["robust_acc"] = pgd_accuracy(model, test_eval, eps=eps, alpha=eval_alpha,
                                                    steps=eval_steps, restarts=eval_restarts, batch_size=512)
        stop = bool(callback(record, model)) if callback is not None else False
        record["stopped"] = stop
        history.append(record)
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            _save_atomic({
                "model": model.state_dict(), "optimizer": opt.state_dict(), "lr_schedule": sched.state_dict(),
                "shuffle_rng": shuffle_gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if dev.type == "cuda" else None,
                "history": history,
            }, ckpt)
        if stop:
            break
    return history
