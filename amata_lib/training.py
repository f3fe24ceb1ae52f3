"""Adversarial training driven by a schedule (which plan in which epoch) and an inner maximizer.

Algorithm 1 of the paper in three short functions: the schedule gives epoch ``t``'s
plan ``(K_t, alpha_t)`` (:mod:`amata_lib.schedules`); :func:`_run_epoch` runs one
epoch, handing every minibatch to :meth:`Maximizer.step <amata_lib.maximizers.Maximizer.step>`,
which attacks with :func:`~amata_lib.attacks.pgd` and takes one parameter step.
:func:`train` is the outer loop around them: check, resume, then per epoch run,
evaluate and checkpoint. ``schedule=None`` is plain ERM.

Attack mode: the maximizer attacks in ``eval()`` mode and trains in ``train()`` mode.
Batch-norm running statistics are therefore updated once per minibatch (by the step
that trains), not ``K`` more times by attack passes, and dropout does not randomise
the attack's gradient. The attack functions themselves never change the mode.

Speed (measured by ``benchmarks/speed.py``): a ``TensorDataset`` is copied to the
GPU once when it fits and every minibatch is gathered there; nothing in the epoch
loop waits for the GPU except one pixel-range check per attack call; other datasets
get one persistent, pinned, multi-worker ``DataLoader`` for the whole run;
``channels_last=True`` stores conv-net activations in the layout tensor cores prefer.
Under ``torchrun`` the same function trains data-parallel, see
:mod:`amata_lib.distributed`: the attack runs on the bare model (no gradient
all-reduce for attack passes), only the parameter step goes through DDP.
"""
from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from . import distributed
from ._checks import (
    check_bool,
    check_choice,
    check_labels,
    check_positive,
    check_real,
    check_strict_int,
)
from .checkpoints import RunLock, capture, load_checkpoint, restore, save_checkpoint
from .data import AUGMENTATIONS, check_dataset, epoch_feed, subset, to_device
from .errors import UserError
from .evaluation import accuracy, fgsm_accuracy, pgd_accuracy
from .history import catastrophic_overfitting
from .maximizers import Clean, Maximizer, PGDMaximizer
from .schedules import Plan, Schedule

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "multistep", "cosine", "cyclic")
Callback = Callable[[dict, nn.Module], Any]
FOLLOW_AUGMENTATION = "follow_augmentation"
"""Name of the optional maximizer hook for per-example state under augmentation.

With ``train(..., augment="crop-flip")``, every maximizer's ``follow_augmentation(current)``
(a no-op in :class:`~amata_lib.maximizers.Maximizer`; methods with per-example state set
``follows_augmentation = True`` and override it) is called once before training with ``current``, a
function of no arguments returning the :class:`~amata_lib.data.CropFlip` of the epoch
being fed. In ``perturb``/``step``, ``current().of(index)`` gives the minibatch's
``(offsets, flips)``: the same crop and flip the batch ``x`` went through, so a stored
per-example perturbation can follow it (ATTA keeps its store padded and reads it with
:func:`~amata_lib.data.crop_flip` at ``pad=0``)."""


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; a named device must exist on this machine."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"device {device!r} is not a valid torch device ({exc}); try auto, cpu or cuda") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"device {str(device)!r} is not available here ({torch.cuda.device_count()} CUDA "
                        f"devices); use --device cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"device {str(device)!r} is not available here (no Apple GPU); use --device cpu or auto")
    return dev


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo).

    Elsewhere bf16 autocast on the CPU still runs, emulated and slower than fp32. Where
    /proc/cpuinfo cannot be read (not Linux), ``False``.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


def make_optimizer(model: nn.Module, optimizer: str, lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """SGD (with momentum) or Adam over all parameters."""
    check_choice("optimizer", optimizer, OPTIMIZERS)
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


class LRSchedule:
    """A torch learning-rate scheduler and when the trainer steps it: after every minibatch or every epoch."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler, per_batch: bool) -> None:
        self.scheduler, self.per_batch = scheduler, per_batch

    def after_batch(self) -> None:
        """Called after every parameter step of a minibatch."""
        if self.per_batch:
            self.scheduler.step()

    def after_epoch(self) -> None:
        """Called after every epoch."""
        if not self.per_batch:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def cyclic_factor(k: int, epochs: int, batches: int) -> float:
    """Wong et al.'s cyclic rate for minibatch ``k`` (from 0) as a fraction of the peak ``lr``.

    Their ``MNIST/train_mnist.py``: ``np.interp(t, [0, epochs * 2 // 5, epochs], [0, lr_max, 0])``
    at ``t = epoch + (i + 1) / batches``, set before minibatch ``i``'s step: a triangle from 0
    up to ``lr`` at 2/5 of training and down to 0 at its end. (Their CIFAR-10
    ``train_fgsm.py`` peaks at the middle instead.)
    """
    return float(np.interp((k + 1) / batches, [0, epochs * 2 // 5, epochs], [0.0, 1.0, 0.0]))


def make_lr_schedule(opt: torch.optim.Optimizer, lr_schedule: str, epochs: int, batches: int = 1) -> LRSchedule:
    """Learning-rate schedule: constant, multistep (x0.1 at 50 % and 75 % of epochs), cosine (per epoch),
    or cyclic (per minibatch, :func:`cyclic_factor`; ``batches`` minibatches per epoch)."""
    check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
    if lr_schedule == "cyclic":
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: cyclic_factor(k, epochs, batches))
        return LRSchedule(scheduler, per_batch=True)
    if lr_schedule == "constant":
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    elif lr_schedule == "multistep":
        milestones = sorted({max(1, epochs // 2), max(1, (3 * epochs) // 4)})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    return LRSchedule(scheduler, per_batch=False)


def _tidy(passes: float) -> int | float:
    """Pass counts stay integers when they are (PGD, ERM); early-stopping methods give fractions."""
    return int(passes) if float(passes).is_integer() else round(passes, 3)


def _global_sizes(n: int, batch_size: int) -> list[int]:
    """Sizes of the global minibatches of one epoch (the last may be short)."""
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]


def _sha256(dataset: Dataset) -> dict:
    """What identifies a dataset in a run's settings: its size and, for tensors, a hash of their bytes."""
    if not isinstance(dataset, TensorDataset):
        return {"type": type(dataset).__name__, "size": len(dataset)}
    h = hashlib.sha256()
    for t in dataset.tensors:
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {"type": "TensorDataset", "size": len(dataset), "sha256": h.hexdigest()}


def run_settings(model: nn.Module, train_set: Dataset, test_set: Dataset, *, schedule: Schedule | None,
                 maximizer: Maximizer, **options: Any) -> dict:
    """Everything that decides a run's result, as plain data: the fingerprint of checkpoints.

    ``options`` are :func:`train`'s other keyword arguments that change the result
    (epochs, eps, optimiser, batch size, seed, evaluation, ...). The model enters by
    its class and a hash of its initial weights, the data by hashes of their tensors,
    the schedule by every epoch's plan.
    """
    weights = hashlib.sha256()
    for name, value in model.state_dict().items():
        weights.update(name.encode())
        weights.update(value.detach().cpu().contiguous().numpy().tobytes())
    plans = None if schedule is None else schedule.fingerprint()
    return {"model": type(model).__name__, "init_sha256": weights.hexdigest(),
            "schedule": None if schedule is None else {"repr": repr(schedule), "plans": plans},
            "maximizer": maximizer.settings(), "train_set": _sha256(train_set), "test_set": _sha256(test_set),
            "world_size": distributed.world_size(), **options}


def _check_arguments(epochs: int, eps: float, schedule: Schedule | None, maximizer: Maximizer | None,
                     options: dict) -> None:
    """Every argument of :func:`train` that can be checked without the data, before any work."""
    check_strict_int("epochs", epochs)
    check_real("eps", eps, minimum=0, maximum=1)
    if schedule is not None and not isinstance(schedule, Schedule):
        raise UserError(f"schedule must be a Schedule or None, got {schedule!r}")
    if schedule is not None and schedule.epochs < epochs:
        raise UserError(f"schedule covers {schedule.epochs} epochs but epochs={epochs}")
    if maximizer is not None and not isinstance(maximizer, Maximizer):
        raise UserError(f"maximizer must be a Maximizer (amata_lib.maximizers), got {type(maximizer).__name__}")
    if schedule is None and maximizer is not None and not isinstance(maximizer, Clean):
        raise UserError(f"maximizer {type(maximizer).__name__} needs a schedule (its plan per epoch); "
                        f"got schedule=None")
    if maximizer is not None and not isinstance(maximizer, Clean) and maximizer.eps != eps:
        raise UserError(f"maximizer {type(maximizer).__name__} attacks with eps={maximizer.eps:g} but train has "
                        f"eps={eps:g} (the robust test's radius); give both the same eps")
    check_choice("optimizer", options["optimizer"], OPTIMIZERS)
    check_choice("lr_schedule", options["lr_schedule"], LR_SCHEDULES)
    check_positive("lr", options["lr"])
    check_real("momentum", options["momentum"], minimum=0, maximum=1)
    check_real("weight_decay", options["weight_decay"], minimum=0)
    for name in ("batch_size", "eval_steps", "eval_restarts", "eval_every"):
        check_strict_int(name, options[name])
    check_strict_int("seed", options["seed"], minimum=0)
    if options["eval_subset"] is not None:
        check_strict_int("eval_subset", options["eval_subset"])
    if options["eval_alpha"] is not None:
        check_positive("eval_alpha", options["eval_alpha"])
    for name in ("amp", "channels_last", "detect_overfitting"):
        check_bool(name, options[name])
    check_choice("augment", options["augment"], AUGMENTATIONS)


def _check_inputs(model: nn.Module, maximizer: Maximizer, train_set: Dataset, test_set: Dataset,
                  batch_size: int, world: int, channels_last: bool, augment: str = "none") -> None:
    """Data, model and maximizer fit together: checked on the data and one forward pass, before training."""
    check_dataset("train_set", train_set)
    check_dataset("test_set", test_set)
    x, y = train_set[0]
    if channels_last and x.ndim != 3:
        raise UserError(f"channels_last needs 4-D inputs N x C x H x W, got examples of shape {tuple(x.shape)}")
    if augment != "none" and (x.ndim != 3 or not isinstance(train_set, TensorDataset)):
        raise UserError(f"augment={augment!r} crops and flips image tensors on the device: it needs a "
                        f"TensorDataset train_set of images N x C x H x W, got {type(train_set).__name__} "
                        f"with examples of shape {tuple(x.shape)}")
    if augment != "none" and maximizer.uses_index and not maximizer.follows_augmentation:
        raise UserError(f"maximizer {type(maximizer).__name__} stores one perturbation per example, which would "
                        f"not follow augment={augment!r}'s crops and flips (it has no {FOLLOW_AUGMENTATION} "
                        f"hook); train it with augment='none'")
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            was_training = model.training
            logits = model.eval()(x[None].to(device))
            model.train(was_training)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise UserError(f"model {type(model).__name__} cannot take inputs of shape {tuple(x.shape)} "
                        f"({first}); choose a model for this dataset") from None
    if logits.ndim != 2:
        raise UserError(f"model {type(model).__name__} must return logits N x classes, got shape "
                        f"{tuple(logits.shape)}")
    for name, data in (("train_set", train_set), ("test_set", test_set)):
        if isinstance(data, TensorDataset):
            check_labels(f"{name} labels", data.tensors[1], len(data), num_classes=logits.shape[1])
    smallest = min(_global_sizes(len(train_set), batch_size))
    if smallest < world:
        raise UserError(f"batch_size={batch_size} on {len(train_set)} examples leaves a minibatch of {smallest} "
                        f"for {world} processes; each needs at least one example of every minibatch")
    if maximizer.uses_index and not isinstance(train_set, TensorDataset):
        raise UserError(f"maximizer {type(maximizer).__name__} stores one perturbation per example and "
                        f"needs a TensorDataset train_set, got {type(train_set).__name__}")
    if maximizer.uses_index and world > 1:
        raise UserError(f"maximizer {type(maximizer).__name__} keeps per-example state in one process; "
                        f"it does not run under torchrun (world_size={world})")
    maximizer.check_model(model)


@dataclass
class Run:
    """What one training run carries from epoch to epoch."""

    model: nn.Module
    net: nn.Module  # the model as trained: wrapped by DDP under torchrun
    optimizer: torch.optim.Optimizer
    lr_schedule: LRSchedule
    shuffle_gen: torch.Generator
    maximizer: Maximizer
    device: torch.device


@dataclass
class EpochTotals:
    """One epoch's cost and loss, summed over every process."""

    time: float
    passes: float
    layer_passes: float
    train_loss: float


def _run_epoch(run: Run, feed: Callable, plan: Plan | None, sizes: list[int], *, amp: bool,
               channels_last: bool, bar: Any = None) -> EpochTotals:
    """One pass over the training set (Algorithm 1, lines 3-9): every minibatch goes to ``maximizer.step``."""
    world = distributed.world_size()
    autocast = torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=amp)
    synchronize(run.device)
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=run.device)
    n_seen, work, layer_work = 0, [], []  # passes x shard size, per minibatch
    for b, (x, y, index) in enumerate(feed()):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # DDP averages gradients over ranks; weighting each shard's mean by its share of
        # the global minibatch makes that average the gradient of the global mean.
        scale = len(y) * world / sizes[b]
        with autocast:
            out = run.maximizer.step(run.net, run.model, run.optimizer, x, y, plan, index=index, loss_scale=scale)
        run.lr_schedule.after_batch()
        work.append(out.passes * len(y))
        layer_work.append(out.layer_passes * len(y))
        loss_sum += out.loss.float() * len(y)
        n_seen += len(y)
        if bar is not None:
            bar.update(1)
    synchronize(run.device)
    epoch_time = distributed.all_max(time.perf_counter() - t0)
    loss_total, seen, *totals = distributed.all_sum([float(loss_sum), n_seen, *work, *layer_work])
    passes, layers = totals[:len(work)], totals[len(work):]
    return EpochTotals(time=epoch_time, passes=sum(w / m for w, m in zip(passes, sizes)),
                       layer_passes=sum(w / m for w, m in zip(layers, sizes)), train_loss=loss_total / max(seen, 1))


def _evaluate(model: nn.Module, test_part: Dataset, *, eps: float, alpha: float, steps: int, restarts: int,
              seed: int, device: torch.device, with_fgsm: bool = False) -> list[float]:
    """Clean, PGD (and FGSM) accuracy: each rank tests its share of the test set, the counts are summed."""
    n = len(test_part)
    accs = [0.0] * (3 if with_fgsm else 2)
    if n:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed + 1)
            accs[0] = accuracy(model, test_part, batch_size=512)
            accs[1] = pgd_accuracy(model, test_part, eps=eps, alpha=alpha, steps=steps, restarts=restarts,
                                   batch_size=512)
            if with_fgsm:
                accs[2] = fgsm_accuracy(model, test_part, eps=eps, batch_size=512)
    if distributed.world_size() == 1:
        return accs
    total, *counts = distributed.all_sum([n] + [round(a * n) for a in accs])
    return [c / total for c in counts]


def _probe(schedule: Schedule, t: int, model: nn.Module, probe: tuple[torch.Tensor, torch.Tensor], eps: float,
           batch_size: int, device: torch.device) -> tuple[Plan, float, float]:
    """An adaptive schedule's choice for epoch ``t``: the plan, its probe passes (in minibatches) and seconds."""
    synchronize(device)
    t0 = time.perf_counter()
    plan, passes = schedule.choose(t, model, *probe, eps)
    synchronize(device)
    return plan, passes * len(probe[1]) / batch_size, time.perf_counter() - t0


def _record(t: int, plan: Plan | None, totals: EpochTotals, lr: float, history: list[dict], layers: bool) -> dict:
    """The history record of epoch ``t``: plan, cost so far, loss (accuracies are filled in later)."""
    last = history[-1] if history else {"time": 0.0, "passes": 0, "layer_passes": 0}
    record = {"epoch": t + 1, "steps": plan.steps if plan is not None else 0,
              "alpha": plan.alpha if plan is not None else 0.0, "lr": lr, "epoch_time": totals.time,
              "time": last["time"] + totals.time, "passes": _tidy(last["passes"] + totals.passes),
              "train_loss": totals.train_loss, "clean_acc": None, "robust_acc": None}
    if layers:
        record["layer_passes"] = _tidy(last["layer_passes"] + totals.layer_passes)
    return record


def train(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    *,
    epochs: int,
    eps: float,
    schedule: Schedule | None = None,
    maximizer: Maximizer | None = None,
    optimizer: str = "sgd",
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    lr_schedule: str = "constant",
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "auto",
    amp: bool = False,
    channels_last: bool = False,
    augment: str = "none",
    eval_steps: int = 20,
    eval_alpha: float | None = None,
    eval_restarts: int = 1,
    eval_subset: int | None = None,
    eval_every: int = 1,
    detect_overfitting: bool = False,
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
        Pairs ``(x, y)``; ``TensorDataset`` is fastest (held on the GPU when it fits).
        Tensor data are checked: pixels in [0, 1], integer labels the model can output.
    epochs : int
        Number of epochs T; the schedule must cover at least ``epochs``.
    eps : float
        L-infinity radius of the threat model (pixel units, at most 1), for training and the robust test.
    schedule : Schedule, optional
        Plan ``(K_t, alpha_t)`` per epoch; ``None`` trains on clean data (ERM).
    maximizer : Maximizer, optional
        Inner maximizer (:class:`~amata_lib.maximizers.Maximizer`); defaults to
        :class:`PGDMaximizer` with ``eps`` (or :class:`Clean` for ERM). Each minibatch
        goes to its :meth:`~amata_lib.maximizers.Maximizer.step`.
    optimizer, lr, momentum, weight_decay, lr_schedule
        Outer optimiser (``sgd`` or ``adam``) and its learning-rate schedule
        (:func:`make_lr_schedule`): ``constant``, ``multistep`` and ``cosine`` change it
        per epoch, ``cyclic`` (Wong et al.'s triangle, peak ``lr``) per minibatch.
    batch_size, seed, device
        Global minibatch size (under ``torchrun`` each of N processes takes a
        contiguous 1/N of it); seed of shuffling and random starts (seed the weights'
        init yourself before building the model); ``"auto"`` = cuda, then mps, then cpu.
    amp : bool
        bf16 autocast for the attack and the training step, on CUDA or the CPU; evaluation
        stays fp32 (:mod:`amata_lib.evaluation` leaves autocast). On a CPU it pays only where
        the CPU has bf16 instructions (:func:`cpu_has_bf16`: AVX512-BF16 or AMX): a LeNet
        PGD-10 minibatch took 0.51-0.57 x the fp32 time on an EPYC with avx512_bf16, and
        5.4 x the fp32 time on an AVX2-only EPYC, which emulates bf16 (measured here).
    channels_last : bool
        Model and batches in ``torch.channels_last`` memory format (4-D image inputs;
        faster conv nets on tensor-core GPUs, same results up to rounding).
    augment : {"none", "crop-flip"}
        Training-data augmentation (tensor image data): ``"crop-flip"`` is the random
        crop of the 4-pixel zero-padded image and the random horizontal flip every
        CIFAR-10 reference trains with (:func:`~amata_lib.data.crop_flip`), drawn per
        example and epoch from the shuffling generator, so a resumed run stays exact.
        A maximizer that stores per-example state gets the epoch's crops and flips
        through its ``follow_augmentation`` hook (see :data:`FOLLOW_AUGMENTATION`);
        without one it is refused. The test set is never augmented.
    eval_steps, eval_alpha, eval_restarts, eval_subset, eval_every
        Robust test: PGD-``eval_steps`` (step ``eval_alpha``, default ``2.5 * eps / eval_steps``),
        an example broken if any iterate of any restart fools the model
        (:func:`~amata_lib.evaluation.pgd_accuracy`), on the first ``eval_subset`` test examples, every
        ``eval_every`` epochs and after the last. Evaluation uses its own RNG stream, so
        it does not change the training trajectory. Under ``torchrun`` each process
        tests its share of the examples and the counts are summed.
    detect_overfitting : bool
        Also measure FGSM accuracy at each evaluation and flag catastrophic overfitting
        (see :func:`amata_lib.history.catastrophic_overfitting`): records gain
        ``fgsm_acc`` and ``catastrophic_overfitting`` (None on epochs without evaluation).
    checkpoint : path, optional
        File written atomically after every epoch (by rank 0 only under ``torchrun``),
        together with the run's settings (:func:`run_settings`). If it exists at start,
        training resumes after its last epoch and ends where an uninterrupted run would
        -- but only if its settings match; otherwise, or if the file is damaged,
        foreign or would run code, :class:`~amata_lib.errors.CheckpointError` says
        so. While training, ``checkpoint + ".lock"`` keeps a second process off the run.
    callback : callable, optional
        ``callback(record, model)`` after each epoch (on every process); returning ``True``
        (on any process) stops training.
    progress : bool
        Show a tqdm bar over minibatches (stderr; rank 0 only).

    Returns
    -------
    list of dict
        One record per epoch, identical on every process: ``epoch``, ``steps``, ``alpha``
        (0 for ERM), ``lr`` (the optimiser's rate as the epoch ends: the epoch's rate, for
        ``cyclic`` the next minibatch's), ``epoch_time`` and cumulative ``time`` (seconds of training,
        evaluation excluded, CUDA-synchronised; the slowest process under ``torchrun``),
        cumulative ``passes`` (global-minibatch forward+backward passes; a pass on part of a
        minibatch counts as that fraction; for YOPO also cumulative ``layer_passes``, its
        first-layer-only passes), ``train_loss``, ``clean_acc`` and ``robust_acc``
        (None on epochs without evaluation).

    Raises
    ------
    UserError
        A bad argument, bad data, a model that does not fit the data, or an unusable checkpoint.

    Notes
    -----
    Before any training, one example goes through the model in ``eval()`` mode without
    gradient, to check that the model takes the data's shape and has an output per
    label. That forward pass is not counted in ``passes``.
    """
    options = dict(epochs=epochs, eps=eps, optimizer=optimizer, lr=lr, momentum=momentum,
                   weight_decay=weight_decay, lr_schedule=lr_schedule, batch_size=batch_size, seed=seed,
                   amp=amp, channels_last=channels_last, augment=augment, eval_steps=eval_steps,
                   eval_alpha=eval_alpha,
                   eval_restarts=eval_restarts, eval_subset=eval_subset, eval_every=eval_every,
                   detect_overfitting=detect_overfitting)
    _check_arguments(epochs, eps, schedule, maximizer, options)
    dev = select_device(device)
    if amp and dev.type not in ("cuda", "cpu"):
        raise UserError(f"amp (bf16 autocast) needs a CUDA device or the CPU, got device={dev.type!r}")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if maximizer is None:
        maximizer = Clean() if schedule is None else PGDMaximizer(eps)
    _check_inputs(model, maximizer, train_set, test_set, batch_size, distributed.world_size(), channels_last,
                  augment)
    settings = run_settings(model, train_set, test_set, schedule=schedule, maximizer=maximizer, **options)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    lock = RunLock(ckpt) if ckpt is not None and distributed.is_main() else None
    if lock is None:
        return _train_locked(model, train_set, test_set, schedule, maximizer, dev, ckpt, settings, options,
                             callback, progress)
    with lock:
        return _train_locked(model, train_set, test_set, schedule, maximizer, dev, ckpt, settings, options,
                             callback, progress)


def _train_locked(model: nn.Module, train_set: Dataset, test_set: Dataset, schedule: Schedule | None,
                  maximizer: Maximizer, dev: torch.device, ckpt: Path | None, settings: dict, o: dict,
                  callback: Callback | None, progress: bool) -> list[dict]:
    """:func:`train` after its checks: set up, resume, then per epoch run, evaluate, checkpoint."""
    world, rank, epochs = distributed.world_size(), distributed.rank(), o["epochs"]
    seed_everything(o["seed"])
    torch.manual_seed(distributed.rank_seed(o["seed"]))
    model.to(dev)
    if o["channels_last"]:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, o["optimizer"], o["lr"], o["momentum"], o["weight_decay"])
    sizes = _global_sizes(len(train_set), o["batch_size"])
    run = Run(model, model, opt, make_lr_schedule(opt, o["lr_schedule"], epochs, len(sizes)),
              torch.Generator().manual_seed(o["seed"]), maximizer, dev)
    history: list[dict] = []
    if ckpt is not None and ckpt.exists():
        history = restore(run, load_checkpoint(ckpt, settings))
        if history and history[-1].get("stopped"):
            return history
    adaptive = getattr(schedule, "needs_model", False)
    if adaptive:  # its probe minibatch: the first probe_size training examples
        schedule.restore(history)
        first = [train_set[i] for i in range(min(schedule.probe_size, len(train_set)))]
        probe = (torch.stack([ex[0] for ex in first]).to(dev), torch.as_tensor([int(ex[1]) for ex in first]).to(dev))
    if world > 1:
        run.net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    feed = epoch_feed(train_set, o["batch_size"], run.shuffle_gen, dev, rank, world, o["seed"], o["augment"])
    if o["augment"] != "none":
        maximizer.follow_augmentation(feed.augmentation)
    test_part = to_device(distributed.shard_dataset(subset(test_set, o["eval_subset"]), rank, world), dev)
    eval_alpha = 2.5 * o["eps"] / o["eval_steps"] if o["eval_alpha"] is None else o["eval_alpha"]
    for t in range(len(history), epochs):
        probe_cost = (0.0, 0.0)
        if adaptive:
            plan, *probe_cost = _probe(schedule, t, model, probe, o["eps"], o["batch_size"], dev)
        else:
            plan = schedule(t) if schedule is not None else None
        maximizer.start_epoch(t, epochs)
        bar = None
        if progress and distributed.is_main():
            from tqdm.auto import tqdm
            bar = tqdm(total=len(sizes), desc=f"epoch {t + 1}/{epochs}", leave=False)
        totals = _run_epoch(run, feed, plan, sizes, amp=o["amp"], channels_last=o["channels_last"], bar=bar)
        if bar is not None:
            bar.close()
        if adaptive:  # the probe is training cost
            totals = replace(totals, passes=totals.passes + probe_cost[0], time=totals.time + probe_cost[1])
        record = _record(t, plan, totals, opt.param_groups[0]["lr"], history, maximizer.counts_layer_passes)
        if adaptive:
            record["probe_passes"], record["probe_time"] = _tidy(probe_cost[0]), probe_cost[1]
        run.lr_schedule.after_epoch()
        if o["detect_overfitting"]:
            record["fgsm_acc"] = record["catastrophic_overfitting"] = None
        if (t + 1) % o["eval_every"] == 0 or t + 1 == epochs:
            accs = _evaluate(model, test_part, eps=o["eps"], alpha=eval_alpha, steps=o["eval_steps"],
                             restarts=o["eval_restarts"], seed=o["seed"], device=dev,
                             with_fgsm=o["detect_overfitting"])
            record["clean_acc"], record["robust_acc"] = accs[:2]
            if o["detect_overfitting"]:
                record["fgsm_acc"] = accs[2]
                record["catastrophic_overfitting"] = catastrophic_overfitting(history + [record])
        stop = distributed.all_max(bool(callback(record, model)) if callback is not None else False) > 0
        record["stopped"] = stop
        history.append(record)
        if ckpt is not None:
            state = capture(run, history)
            if state is not None:
                save_checkpoint(ckpt, state, settings)
        if stop:
            break
    return history
