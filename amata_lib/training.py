"""Adversarial training driven by a schedule (which plan in which epoch) and an inner maximizer.

One epoch of :func:`train` is the paper's Algorithm 1 with ``schedule(t)`` giving
``(K_t, alpha_t)``: for each minibatch the maximizer builds the adversarial batch,
then one SGD/Adam step is taken on it. ``schedule=None`` is plain ERM.

Attack mode: the trainer switches the model to ``eval()`` while the maximizer runs
and back to ``train()`` for the parameter step. Batch-norm running statistics are
therefore updated once per minibatch (by the step that trains), not ``K`` more times
by attack passes, and dropout does not randomise the attack's gradient. The attack
functions themselves never change the mode.

Speed (measured by ``benchmarks/speed.py``): a ``TensorDataset`` is copied to the
GPU once when it fits and every minibatch is gathered there; nothing in the epoch
loop waits for the GPU (the loss is summed on the device and read once per epoch);
other datasets get one persistent, pinned, multi-worker ``DataLoader`` for the whole
run; ``channels_last=True`` stores conv-net activations in the layout tensor cores
prefer. Under ``torchrun`` the same function trains data-parallel, see
:mod:`amata_lib.distributed`: the attack runs on the bare model (no gradient
all-reduce for attack passes), only the parameter step goes through DDP.
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
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from ._checks import check_real
from . import distributed
from .evaluation import accuracy, catastrophic_overfitting, fgsm_accuracy, pgd_accuracy
from .maximizers import Clean, PGDMaximizer
from .schedules import Schedule

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "multistep", "cosine")
DEVICE_DATA_FRACTION = 0.25
Callback = Callable[[dict, nn.Module], Any]
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]
IndexedBatches = Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]


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


def _index_batches(n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None, rank: int,
                   world_size: int, device: torch.device | None = None) -> Iterator[slice | torch.Tensor]:
    """Indices of rank ``rank``'s shard of every global minibatch; one permutation per call."""
    order = torch.randperm(n, generator=generator) if shuffle else None
    if order is not None and device is not None:
        order = order.to(device, non_blocking=True)
    for start in range(0, n, batch_size):
        lo, hi = distributed.shard_bounds(start, min(start + batch_size, n), rank, world_size)
        yield slice(lo, hi) if order is None else order[lo:hi]


class ShardedBatchSampler(Sampler[list[int]]):
    """``DataLoader`` batch sampler: rank ``rank``'s shard of every global minibatch.

    Ranks draw the same permutation from equally seeded generators, so the shards
    of one global minibatch partition it.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None,
                 rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.shuffle, self.generator = n, batch_size, shuffle, generator
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for idx in _index_batches(self.n, self.batch_size, self.shuffle, self.generator, self.rank, self.world_size):
            yield list(range(idx.start, idx.stop)) if isinstance(idx, slice) else idx.tolist()

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, generator: torch.Generator | None,
                device: torch.device | None, rank: int = 0, world_size: int = 1,
                num_workers: int | None = None, seed: int = 0) -> DataLoader:
    """``DataLoader`` for datasets that are not ``TensorDataset`` (e.g. torchvision's with transforms).

    Workers (default: this process's share of the usable CPU cores, at most 8)
    live across epochs and prefetch; batches are pinned for asynchronous copies to
    CUDA, so decoding does not starve the GPU. ``seed`` seeds the workers (random
    transforms) without touching the global RNG; ``generator`` shuffles.
    """
    if num_workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        num_workers = min(8, cpus // world_size)
    sampler = ShardedBatchSampler(len(dataset), batch_size, shuffle=shuffle, generator=generator,
                                  rank=rank, world_size=world_size)
    workers = num_workers > 0
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      pin_memory=device is not None and device.type == "cuda", persistent_workers=workers,
                      prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(seed))


def _moved(loader: DataLoader, device: torch.device | None) -> Batches:
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def batches(dataset: Dataset, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None, device: torch.device | None = None,
            rank: int = 0, world_size: int = 1) -> Batches:
    """Minibatches ``(x, y)`` on ``device``: rank ``rank``'s shard of each global minibatch of ``batch_size``.

    A ``TensorDataset`` is indexed where its tensors live (on the GPU after
    :func:`to_device`; the permutation is moved there once per pass); other
    datasets go through :func:`make_loader`.
    """
    if isinstance(dataset, TensorDataset):
        for x, y, _ in _tensor_batches(dataset, batch_size, shuffle, generator, device, rank, world_size):
            yield x, y
    else:
        yield from _moved(make_loader(dataset, batch_size, shuffle=shuffle, generator=generator,
                                      device=device, rank=rank, world_size=world_size), device)


def to_device(dataset: Dataset, device: torch.device, max_fraction: float = DEVICE_DATA_FRACTION) -> Dataset:
    """A ``TensorDataset`` copied once to a CUDA ``device`` if it needs at most ``max_fraction`` of the
    free device memory; any other dataset, device or size is returned unchanged."""
    if not isinstance(dataset, TensorDataset) or device.type != "cuda":
        return dataset
    nbytes = sum(t.numel() * t.element_size() for t in dataset.tensors)
    if nbytes > max_fraction * torch.cuda.mem_get_info(device)[0]:
        return dataset
    return TensorDataset(*(t.to(device) for t in dataset.tensors))


def _tensor_batches(dataset: TensorDataset, batch_size: int, shuffle: bool, generator: torch.Generator | None,
                    device: torch.device | None, rank: int, world_size: int) -> IndexedBatches:
    """``(x, y, index)`` minibatches of a ``TensorDataset``, indexed where its tensors live."""
    x, y = dataset.tensors
    for idx in _index_batches(len(y), batch_size, shuffle, generator, rank, world_size, x.device):
        yield x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True), idx


def _epoch_feed(dataset: Dataset, batch_size: int, generator: torch.Generator, device: torch.device,
                rank: int, world_size: int, seed: int) -> Callable[[], IndexedBatches]:
    """Shuffled training minibatches ``(x, y, index)``, one epoch per call: tensors are moved to the
    device once and ``index`` holds the examples' dataset indices; other datasets share one
    persistent ``DataLoader`` over all epochs and give ``index = None``."""
    if isinstance(dataset, TensorDataset):
        on_device = to_device(dataset, device)
        return lambda: _tensor_batches(on_device, batch_size, True, generator, device, rank, world_size)
    loader = make_loader(dataset, batch_size, shuffle=True, generator=generator, device=device,
                         rank=rank, world_size=world_size, seed=seed)
    return lambda: ((x, y, None) for x, y in _moved(loader, device))


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
    check_real(name, value, minimum=0, strict=True)


def _global_sizes(n: int, batch_size: int) -> list[int]:
    """Sizes of the global minibatches of one epoch (the last may be short)."""
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]


def _check_shards(n: int, batch_size: int, world_size: int) -> None:
    if n == 0:
        raise ValueError("train_set must hold at least one example, got an empty dataset")
    smallest = min(_global_sizes(n, batch_size))
    if smallest < world_size:
        raise ValueError(f"batch_size={batch_size} on {n} examples leaves a minibatch of {smallest} for "
                         f"{world_size} processes; each needs at least one example of every minibatch")


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """This process's CPU generator state and that of its CUDA device."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _restore_rng(state: dict, device: torch.device, world_size: int, rank: int) -> None:
    """Set the random generators saved in a checkpoint (each rank its own under DDP)."""
    saved_world = state.get("world_size", 1)
    if saved_world != world_size:
        raise ValueError(f"checkpoint was written by world_size={saved_world} processes; resume with the "
                         f"same number, got world_size={world_size}")
    if world_size == 1:
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return
    cpu, cuda = state["rank_rng"][rank]
    torch.set_rng_state(cpu)
    if device.type == "cuda" and cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


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


def _check_maximizer(maximizer: Any, schedule: Schedule | None, train_set: Dataset, world: int) -> None:
    """Combinations the trainer cannot run, reported before any work."""
    if schedule is None and maximizer is not None and not isinstance(maximizer, Clean):
        raise ValueError(f"maximizer {type(maximizer).__name__} needs a schedule (its plan per epoch); "
                         f"got schedule=None")
    if getattr(maximizer, "uses_index", False):
        if not isinstance(train_set, TensorDataset):
            raise ValueError(f"maximizer {type(maximizer).__name__} stores one perturbation per example and "
                             f"needs a TensorDataset train_set, got {type(train_set).__name__}")
        if world > 1:
            raise ValueError(f"maximizer {type(maximizer).__name__} keeps per-example state in one process; "
                             f"it does not run under torchrun (world_size={world})")


def _tensors_to(state: Any, device: torch.device) -> Any:
    """A maximizer's saved state with every tensor moved to ``device``."""
    if isinstance(state, dict):
        return {k: _tensors_to(v, device) for k, v in state.items()}
    return state.to(device) if isinstance(state, torch.Tensor) else state


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
    channels_last: bool = False,
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
        at the start of every epoch (for methods whose state depends on the epoch). Optional
        extensions (see :mod:`amata_lib.plus`): ``uses_index = True`` -- called with
        ``index=`` the examples' dataset indices (``TensorDataset`` only, one process);
        ``own_step = True`` -- ``maximizer.train_step(net, model, optimizer, x, y, plan,
        loss_scale) -> loss`` replaces the trainer's parameter step and ``passes`` counts
        every pass of the minibatch; ``state_dict()`` / ``load_state_dict()`` -- its state is
        saved in the checkpoint (e.g. perturbations carried across minibatches or epochs).
    optimizer, lr, momentum, weight_decay, lr_schedule
        Outer optimiser (``sgd`` or ``adam``) and its per-epoch learning-rate schedule.
    batch_size, seed, device
        Global minibatch size (under ``torchrun`` each of N processes takes a
        contiguous 1/N of it); seed of shuffling and random starts (seed the weights'
        init yourself before building the model); ``"auto"`` = cuda, then mps, then cpu.
    amp : bool
        bf16 autocast for the attack and the training step (CUDA only); evaluation stays fp32.
    channels_last : bool
        Model and batches in ``torch.channels_last`` memory format (4-D image inputs;
        faster conv nets on tensor-core GPUs, same results up to rounding).
    eval_steps, eval_alpha, eval_restarts, eval_subset, eval_every
        Robust test: PGD-``eval_steps`` (step ``eval_alpha``, default ``2.5 * eps / eval_steps``),
        worst case over restarts, on the first ``eval_subset`` test examples, every
        ``eval_every`` epochs and after the last. Evaluation uses its own RNG stream, so
        it does not change the training trajectory. Under ``torchrun`` each process
        tests its share of the examples and the counts are summed.
    detect_overfitting : bool
        Also measure FGSM accuracy at each evaluation and flag catastrophic overfitting
        (see :func:`amata_lib.evaluation.catastrophic_overfitting`): records gain
        ``fgsm_acc`` and ``catastrophic_overfitting`` (None on epochs without evaluation).
    checkpoint : path, optional
        File written atomically after every epoch (by rank 0 only under ``torchrun``); if it
        exists at start, training resumes after its last epoch and ends where an
        uninterrupted run would.
    callback : callable, optional
        ``callback(record, model)`` after each epoch (on every process); returning ``True``
        (on any process) stops training.
    progress : bool
        Show a tqdm bar over minibatches (stderr; rank 0 only).

    Returns
    -------
    list of dict
        One record per epoch, identical on every process: ``epoch``, ``steps``, ``alpha``
        (0 for ERM), ``lr``, ``epoch_time`` and cumulative ``time`` (seconds of training,
        evaluation excluded, CUDA-synchronised; the slowest process under ``torchrun``),
        cumulative ``passes`` (global-minibatch forward+backward passes; a pass on part of a
        minibatch counts as that fraction; for YOPO also cumulative ``layer_passes``, its
        first-layer-only passes), ``train_loss``, ``clean_acc`` and ``robust_acc``
        (None on epochs without evaluation).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"epochs must be an integer > 0, got {epochs!r}")
    check_real("eps", eps, minimum=0)
    if schedule is not None and schedule.epochs < epochs:
        raise ValueError(f"schedule covers {schedule.epochs} epochs but epochs={epochs}")
    _check_positive("lr", lr)
    for name, value in (("batch_size", batch_size), ("eval_steps", eval_steps),
                        ("eval_restarts", eval_restarts), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be an integer > 0, got {value!r}")
    for name, flag in (("channels_last", channels_last), ("detect_overfitting", detect_overfitting)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be a bool, got {flag!r}")
    if channels_last and isinstance(train_set, TensorDataset) and train_set.tensors[0].ndim != 4:
        raise ValueError(f"channels_last needs 4-D inputs N x C x H x W, got shape "
                         f"{tuple(train_set.tensors[0].shape)}")
    dev = select_device(device)
    if amp and dev.type != "cuda":
        raise ValueError(f"amp (bf16 autocast) needs a CUDA device, got device={dev.type!r}")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    world, rank = distributed.world_size(), distributed.rank()
    _check_shards(len(train_set), batch_size, world)
    _check_maximizer(maximizer, schedule, train_set, world)
    if hasattr(maximizer, "check_model"):
        maximizer.check_model(model)
    if maximizer is None:
        maximizer = Clean() if schedule is None else PGDMaximizer(eps)
    own_step = bool(getattr(maximizer, "own_step", False))
    uses_index = bool(getattr(maximizer, "uses_index", False))
    counts_layers = hasattr(maximizer, "layer_passes")
    eval_alpha = 2.5 * eps / eval_steps if eval_alpha is None else eval_alpha

    seed_everything(seed)
    torch.manual_seed(distributed.rank_seed(seed))
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay)
    sched = make_lr_schedule(opt, lr_schedule, epochs)
    shuffle_gen = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    start_epoch = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        # on the CPU: generator states must be CPU byte tensors; load_state_dict moves the rest
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        _restore_rng(state, dev, world, rank)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["lr_schedule"])
        shuffle_gen.set_state(state["shuffle_rng"])
        saved = state.get("maximizer")
        if saved is not None:
            if not hasattr(maximizer, "load_state_dict"):
                raise ValueError(f"checkpoint {ckpt} holds the state of a maximizer that keeps state, but "
                                 f"{type(maximizer).__name__} has no load_state_dict; resume with the same maximizer")
            maximizer.load_state_dict(_tensors_to(saved[rank] if world > 1 else saved, dev))
        history = state["history"]
        start_epoch = len(history)
        if history and history[-1].get("stopped"):
            return history

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    feed = _epoch_feed(train_set, batch_size, shuffle_gen, dev, rank, world, seed)
    test_part = to_device(distributed.shard_dataset(_subset(test_set, eval_subset), rank, world), dev)
    sizes = _global_sizes(len(train_set), batch_size)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else torch.autocast("cpu", enabled=False)
    for t in range(start_epoch, epochs):
        plan = schedule(t) if schedule is not None else None
        if hasattr(maximizer, "start_epoch"):
            maximizer.start_epoch(t, epochs)
        bar = None
        if progress and distributed.is_main():
            from tqdm.auto import tqdm
            bar = tqdm(total=len(sizes), desc=f"epoch {t + 1}/{epochs}", leave=False)
        synchronize(dev)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=dev)
        n_seen = 0
        attack_work: list[float] = []  # maximizer passes x shard size, per minibatch
        layer_work: list[float] = []  # the same for first-layer-only passes (YOPO)
        for b, (x, y, index) in enumerate(feed()):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            # DDP averages gradients over ranks; weighting each shard's mean by its share of
            # the global minibatch makes that average the gradient of the global mean.
            scale = len(y) * world / sizes[b] if world > 1 else 1.0
            with autocast:
                if own_step:
                    net.train()
                    loss = maximizer.train_step(net, model, opt, x, y, plan, scale)
                    attack_work.append(maximizer.passes(plan) * len(y))
                    if counts_layers:
                        layer_work.append(maximizer.layer_passes * len(y))
                else:
                    if plan is not None:
                        model.eval()
                        extra = {"index": index} if uses_index else {}
                        x = maximizer(model, x, y, plan, **extra)
                        attack_work.append(maximizer.passes(plan) * len(y))
                    net.train()
                    loss = F.cross_entropy(net(x), y)
            if not own_step:
                opt.zero_grad(set_to_none=True)
                (loss * scale).backward()
                opt.step()
            loss_sum += loss.detach().float() * len(y)
            n_seen += len(y)
            if bar is not None:
                bar.update(1)
        synchronize(dev)
        epoch_time = distributed.all_max(time.perf_counter() - t0)
        if bar is not None:
            bar.close()
        loss_total, seen, *work = distributed.all_sum([float(loss_sum), n_seen, *attack_work, *layer_work])
        attack_totals, layer_totals = work[:len(attack_work)], work[len(attack_work):]
        # own-step methods count their training passes themselves; otherwise one per minibatch
        epoch_passes = (0 if own_step else len(sizes)) + sum(w / m for w, m in zip(attack_totals, sizes))
        record = {
            "epoch": t + 1,
            "steps": plan.steps if plan is not None else 0,
            "alpha": plan.alpha if plan is not None else 0.0,
            "lr": opt.param_groups[0]["lr"],
            "epoch_time": epoch_time,
            "time": (history[-1]["time"] if history else 0.0) + epoch_time,
            "passes": _tidy((history[-1]["passes"] if history else 0) + epoch_passes),
            "train_loss": loss_total / max(seen, 1),
            "clean_acc": None,
            "robust_acc": None,
        }
        if layer_totals:
            record["layer_passes"] = _tidy((history[-1]["layer_passes"] if history else 0)
                                           + sum(w / m for w, m in zip(layer_totals, sizes)))
        sched.step()
        if detect_overfitting:
            record["fgsm_acc"] = record["catastrophic_overfitting"] = None
        if (t + 1) % eval_every == 0 or t + 1 == epochs:
            accs = _evaluate(model, test_part, eps=eps, alpha=eval_alpha, steps=eval_steps,
                             restarts=eval_restarts, seed=seed, device=dev, with_fgsm=detect_overfitting)
            record["clean_acc"], record["robust_acc"] = accs[:2]
            if detect_overfitting:
                record["fgsm_acc"] = accs[2]
                record["catastrophic_overfitting"] = catastrophic_overfitting(history + [record])
        stop = distributed.all_max(bool(callback(record, model)) if callback is not None else False) > 0
        record["stopped"] = stop
        history.append(record)
        if ckpt is not None:
            rank_rng = distributed.all_gather(_rng_state(dev)) if world > 1 else None
            max_state = maximizer.state_dict() if hasattr(maximizer, "state_dict") else None
            if max_state is not None and world > 1:  # each rank's own (e.g. Free's perturbation of its shard)
                max_state = distributed.all_gather(_tensors_to(max_state, torch.device("cpu")))
            if distributed.is_main():
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                _save_atomic({
                    "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "lr_schedule": sched.state_dict(), "shuffle_rng": shuffle_gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if dev.type == "cuda" and world == 1 else None,
                    "world_size": world, "rank_rng": rank_rng, "history": history,
                    "maximizer": max_state,
                }, ckpt)
        if stop:
            break
    return history
