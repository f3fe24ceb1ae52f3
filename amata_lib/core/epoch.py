"""One epoch of adversarial training (Algorithm 1, lines 3-9): every minibatch through ``Maximizer.step``.

:func:`run_epoch` is the inner loop of :func:`amata_lib.core.training.train`, apart from
the outer loop's checks, resumption, evaluation and checkpoints (the split of MadryLab's
``robustness``): it takes the epoch's plan ``(K_t, alpha_t)`` from the schedule, hands
each minibatch to the maximizer, which attacks and takes one parameter step, and counts
time and forward+backward passes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..infra import distributed
from .maximizers import Maximizer
from .optim import LRSchedule
from .schedules import Plan


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


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


def run_epoch(run: Run, feed: Callable, plan: Plan | None, sizes: list[int], *, amp: bool,
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


