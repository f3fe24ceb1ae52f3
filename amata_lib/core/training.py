"""Adversarial training driven by a schedule (which plan in which epoch) and an inner maximizer.

Algorithm 1 of the paper in three short functions: the schedule gives epoch ``t``'s
plan ``(K_t, alpha_t)`` (:mod:`amata_lib.core.schedules`); :func:`~amata_lib.core.epoch.run_epoch` runs one
epoch, handing every minibatch to :meth:`Maximizer.step <amata_lib.core.maximizers.Maximizer.step>`,
which attacks with :func:`~amata_lib.core.attacks.pgd` and takes one parameter step.
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
:mod:`amata_lib.infra.distributed`: the attack runs on the bare model (no gradient
all-reduce for attack passes), only the parameter step goes through DDP.
"""
from __future__ import annotations

import hashlib
import os
import random
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from ..infra import distributed
from ..infra.checkpoints import RunLock, capture, load_checkpoint, restore, save_checkpoint
from ..infra.checks import (
    check_bool,
    check_choice,
    check_labels,
    check_positive,
    check_real,
    check_strict_int,
)
from ..infra.data import AUGMENTATIONS, check_dataset, epoch_feed, subset, to_device
from ..infra.errors import AmataWarning, UserError
from .epoch import EpochTotals, Run, run_epoch, synchronize
from .evaluation import accuracy, fgsm_accuracy, pgd_accuracy
from .history import catastrophic_overfitting
from .maximizers import Clean, Maximizer, PGDMaximizer
from .optim import LR_SCHEDULES, OPTIMIZERS, make_lr_schedule, make_optimizer
from .schedules import Plan, Schedule, step_for

Callback = Callable[[dict, nn.Module], Any]
FOLLOW_AUGMENTATION = "follow_augmentation"
"""Name of the optional maximizer hook for per-example state under augmentation.

With ``train(..., augment="crop-flip")``, every maximizer's ``follow_augmentation(current)``
(a no-op in :class:`~amata_lib.core.maximizers.Maximizer`; methods with per-example state set
``follows_augmentation = True`` and override it) is called once before training with ``current``, a
function of no arguments returning the :class:`~amata_lib.infra.data.CropFlip` of the epoch
being fed. In ``perturb``/``step``, ``current().of(index)`` gives the minibatch's
``(offsets, flips)``: the same crop and flip the batch ``x`` went through, so a stored
per-example perturbation can follow it (ATTA keeps its store padded and reads it with
:func:`~amata_lib.infra.data.crop_flip` at ``pad=0``)."""


TRAINING_DEVICES = ("cpu", "cuda", "mps")


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; a named device must be one of those and exist on this machine."""
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
    if dev.type not in TRAINING_DEVICES:  # meta holds no data; others are not supported by the trainer
        raise UserError(f"device {str(device)!r} cannot train here: use one of {', '.join(TRAINING_DEVICES)} "
                        f"(or auto)")
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


def _check_arguments(schedule: Schedule | None, maximizer: Maximizer | None, options: dict) -> None:
    """Every argument of :func:`train` that can be checked without the data, before any work."""
    if schedule is None and maximizer is not None and not isinstance(maximizer, Clean):
        raise UserError(f"maximizer {type(maximizer).__name__} needs a schedule (its plan per epoch); "
                        f"got schedule=None")
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
    x_test = test_set[0][0]
    if tuple(x_test.shape) != tuple(x.shape) or x_test.dtype != x.dtype:  # else it fails only at the first test
        raise UserError(f"test_set examples are {tuple(x_test.shape)} {x_test.dtype}, train_set examples "
                        f"{tuple(x.shape)} {x.dtype}: a model is tested on images like those it trains on")
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


@dataclass(frozen=True)
class TrainOptions:
    """How :func:`train` optimises and evaluates: everything but the model, the data, the schedule and the maximizer.

    Optimisation: ``optimizer`` (``sgd`` or ``adam``), ``lr``, ``momentum``,
    ``weight_decay``, ``lr_schedule`` (:func:`make_lr_schedule`: ``constant``,
    ``multistep`` and ``cosine`` change the rate per epoch, ``cyclic`` -- Wong et al.'s
    triangle peaking at ``lr`` -- per minibatch), ``batch_size`` (the global minibatch;
    under ``torchrun`` each of N processes takes a contiguous 1/N of it).

    Speed: ``amp`` -- bf16 autocast for the attack and the training step, on CUDA or the
    CPU; evaluation stays fp32. On a CPU it pays only where the CPU has bf16 instructions
    (:func:`cpu_has_bf16`: AVX512-BF16 or AMX): a LeNet PGD-10 minibatch took 0.51-0.57 x
    the fp32 time on an EPYC with avx512_bf16 and 6.08 x on an AVX2-only EPYC, which
    emulates bf16 (``data/benchmarks``); there :func:`train` says so in one warning.
    ``channels_last`` -- model and batches in ``torch.channels_last`` memory format (4-D
    image inputs; faster conv nets on tensor-core GPUs, the same results up to rounding).
    ``augment`` -- ``"crop-flip"`` is the random crop of the 4-pixel zero-padded image and
    the random horizontal flip every CIFAR-10 reference trains with
    (:func:`~amata_lib.infra.data.crop_flip`), drawn per example and epoch from the
    shuffling generator, so a resumed run stays exact; a maximizer with per-example
    state gets the epoch's crops and flips through its ``follow_augmentation`` hook (see
    :data:`FOLLOW_AUGMENTATION`), one without is refused. The test set is never augmented.

    Robust test (after every ``eval_every`` epochs and after the last): PGD-``eval_steps``
    with step ``eval_alpha`` (default :func:`~amata_lib.core.schedules.step_for`:
    ``2.5 * eps / eval_steps``) and ``eval_restarts`` restarts, an example broken if any
    iterate of any restart fools the model (:func:`~amata_lib.core.evaluation.pgd_accuracy`),
    on the first ``eval_subset`` test examples (all when ``None``). Evaluation uses its own
    RNG stream, so it does not change the training trajectory; under ``torchrun`` each
    process tests its share and the counts are summed. ``detect_overfitting`` also
    measures FGSM accuracy at each evaluation and flags catastrophic overfitting
    (:func:`amata_lib.core.history.catastrophic_overfitting`): records gain ``fgsm_acc``
    and ``catastrophic_overfitting`` (None on epochs without evaluation).
    """

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "constant"
    batch_size: int = 128
    amp: bool = False
    channels_last: bool = False
    augment: str = "none"
    eval_steps: int = 20
    eval_alpha: float | None = None
    eval_restarts: int = 1
    eval_subset: int | None = None
    eval_every: int = 1
    detect_overfitting: bool = False


def _radius_and_length(schedule: Schedule | None, maximizer: Maximizer | None, eps: float | None,
                       epochs: int | None) -> tuple[float, int]:
    """The threat model's radius and the number of epochs, each from the one place that gives it."""
    if schedule is not None and not isinstance(schedule, Schedule):
        raise UserError(f"schedule must be a Schedule or None, got {schedule!r}")
    if maximizer is not None and not isinstance(maximizer, Maximizer):
        raise UserError(f"maximizer must be a Maximizer (amata_lib.core.maximizers), got {type(maximizer).__name__}")
    attacking = maximizer is not None and not isinstance(maximizer, Clean)
    if attacking and eps is not None and check_real("eps", eps, minimum=0, maximum=1) != maximizer.eps:
        raise UserError(f"maximizer {type(maximizer).__name__} attacks with eps={maximizer.eps:g} but eps={eps:g} "
                        f"was given too; give eps once (the maximizer's radius is the robust test's)")
    if attacking:
        eps = maximizer.eps
    if eps is None:
        raise UserError("eps (the L-infinity radius of the threat model) is needed: give eps, or a maximizer "
                        "that carries it")
    if schedule is not None and epochs is not None and check_strict_int("epochs", epochs) > schedule.epochs:
        raise UserError(f"schedule covers {schedule.epochs} epochs but epochs={epochs}")
    if epochs is None:
        if schedule is None:
            raise UserError("epochs is needed for ERM (schedule=None); with a schedule it is the schedule's")
        epochs = schedule.epochs
    return check_real("eps", eps, minimum=0, maximum=1), check_strict_int("epochs", epochs)


def train(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    *,
    schedule: Schedule | None = None,
    maximizer: Maximizer | None = None,
    eps: float | None = None,
    epochs: int | None = None,
    options: TrainOptions | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
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
    schedule : Schedule, optional
        Plan ``(K_t, alpha_t)`` per epoch; ``None`` trains on clean data (ERM).
    maximizer : Maximizer, optional
        Inner maximizer (:class:`~amata_lib.core.maximizers.Maximizer`); defaults to
        :class:`PGDMaximizer` with ``eps`` (or :class:`Clean` for ERM). Each minibatch
        goes to its :meth:`~amata_lib.core.maximizers.Maximizer.step`.
    eps : float, optional
        L-infinity radius of the threat model (pixel units, at most 1), for training and
        the robust test. Given once: by the maximizer when there is one (``eps`` may then
        be left out, and must agree if given), else here.
    epochs : int, optional
        Number of epochs T: the schedule's by default (a smaller T stops early); needed for ERM.
    options : TrainOptions, optional
        Optimiser, learning-rate schedule, batch size, speed and evaluation settings
        (:class:`TrainOptions`; its defaults when ``None``).
    seed, device
        Seed of shuffling and random starts (seed the weights' init yourself before
        building the model); ``"auto"`` = cuda, then mps, then cpu.
    checkpoint : path, optional
        File written atomically after every epoch (by rank 0 only under ``torchrun``),
        together with the run's settings (:func:`run_settings`). If it exists at start,
        training resumes after its last epoch and ends where an uninterrupted run would
        -- but only if its settings match; otherwise, or if the file is damaged,
        foreign or would run code, :class:`~amata_lib.infra.errors.CheckpointError` says
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
    opts = TrainOptions() if options is None else options
    if not isinstance(opts, TrainOptions):
        raise UserError(f"options must be a TrainOptions, got {type(opts).__name__}")
    eps, epochs = _radius_and_length(schedule, maximizer, eps, epochs)
    options = dict(epochs=epochs, eps=eps, optimizer=opts.optimizer, lr=opts.lr, momentum=opts.momentum,
                   weight_decay=opts.weight_decay, lr_schedule=opts.lr_schedule, batch_size=opts.batch_size,
                   seed=seed, amp=opts.amp, channels_last=opts.channels_last, augment=opts.augment,
                   eval_steps=opts.eval_steps, eval_alpha=opts.eval_alpha, eval_restarts=opts.eval_restarts,
                   eval_subset=opts.eval_subset, eval_every=opts.eval_every,
                   detect_overfitting=opts.detect_overfitting)
    _check_arguments(schedule, maximizer, options)
    dev = select_device(device)
    if opts.amp and dev.type not in ("cuda", "cpu"):
        raise UserError(f"amp (bf16 autocast) needs a CUDA device or the CPU, got device={dev.type!r}")
    if opts.amp and dev.type == "cpu" and not cpu_has_bf16():
        warnings.warn("amp on this CPU: it has no bf16 instructions (avx512_bf16 or AMX), so bf16 is emulated "
                      "and training runs several times slower than in fp32", AmataWarning, stacklevel=2)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if maximizer is None:
        maximizer = Clean() if schedule is None else PGDMaximizer(eps)
    _check_inputs(model, maximizer, train_set, test_set, opts.batch_size, distributed.world_size(),
                  opts.channels_last, opts.augment)
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
    eval_alpha = step_for(o["eps"], o["eval_steps"]) if o["eval_alpha"] is None else o["eval_alpha"]
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
        totals = run_epoch(run, feed, plan, sizes, amp=o["amp"], channels_last=o["channels_last"], bar=bar)
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
