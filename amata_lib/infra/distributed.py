"""Data-parallel adversarial training over several processes (PyTorch DDP, launched by ``torchrun``).

    python -m torch.distributed.run --nproc_per_node 4 -m amata_lib train --dataset cifar10 ...

Every process runs the same :func:`amata_lib.train`. Each global minibatch of
``batch_size`` examples (the same shuffled order on every rank, drawn from the
seeded generator) is cut into ``world_size`` contiguous shards; rank ``r`` attacks
and trains on shard ``r`` and DDP averages the parameter gradients. With the loss of
every shard weighted by its share of the global batch, N processes take the same
steps as one process with the whole batch (up to floating-point summation order),
provided the attack is deterministic per example and the model has no batch-norm
(or uses :class:`torch.nn.SyncBatchNorm`, CUDA only); random starts differ because
each rank draws its own. Over many epochs even a deterministic PGD lets rounding
differences grow (its sign() flips on tiny gradients of confidently classified
examples), as any change of summation order does, e.g. another GPU model: the runs
then agree statistically, not digit for digit.

Outside ``torchrun`` every function here answers as a single process would
(rank 0 of 1), so library code can call them unconditionally.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset, TensorDataset

from .errors import UserError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
RANK_SEED_STRIDE = 1_000_003


def _env_int(name: str, minimum: int) -> int:
    value = os.environ[name]
    try:
        number = int(value)
    except ValueError:
        raise UserError(f"environment variable {name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise UserError(f"environment variable {name} must be >= {minimum}, got {number}")
    return number


def init_from_env(device: str | torch.device = "auto") -> bool:
    """Join the process group that ``torchrun`` describes in ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``.

    The backend is NCCL for CUDA training (``device`` ``"auto"`` with a GPU present,
    or a ``cuda`` device; each process then uses GPU ``LOCAL_RANK``), else gloo on
    the CPU. Rendezvous uses ``MASTER_ADDR`` and ``MASTER_PORT``, which ``torchrun`` sets.

    Parameters
    ----------
    device : str or torch.device
        The training device as given to :func:`amata_lib.train` (its index is ignored:
        the process's GPU is ``LOCAL_RANK``).

    Returns
    -------
    bool
        ``True`` if this process is now (or already was) part of a process group,
        ``False`` when the variables are absent (a plain single-process run).
    """
    if dist.is_initialized():
        return True
    if not all(name in os.environ for name in ENV_VARS):
        return False
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if rank >= world:
        raise UserError(f"environment variable RANK must be < WORLD_SIZE={world}, got {rank}")
    cuda = torch.cuda.is_available() if str(device) == "auto" else torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", rank=rank, world_size=world)
    else:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    return True


def shutdown() -> None:
    """Leave the process group (no-op outside one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """Number of processes training together (1 outside a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process is rank 0: the one that prints, writes results and checkpoints."""
    return rank() == 0


def rank_seed(seed: int) -> int:
    """Seed of this rank's own randomness (random starts): ``seed`` on rank 0, distinct on others."""
    return seed + RANK_SEED_STRIDE * rank()


def shard_bounds(start: int, stop: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous part ``[lo, hi)`` of ``[start, stop)``; part sizes differ by at most one."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"rank must be in [0, world_size={world_size}), got {rank}")
    size, extra = divmod(stop - start, world_size)
    lo = start + rank * size + min(rank, extra)
    return lo, lo + size + (rank < extra)


def shard_dataset(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    """Rank ``rank``'s contiguous share of ``dataset`` (the whole dataset when ``world_size`` is 1)."""
    if world_size == 1:
        return dataset
    lo, hi = shard_bounds(0, len(dataset), rank, world_size)
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[lo:hi] for t in dataset.tensors))
    return Subset(dataset, range(lo, hi))


def _collective_device() -> torch.device:
    """NCCL reduces CUDA tensors; gloo reduces CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over all ranks, in float64 (unchanged in a single process)."""
    if world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_max(value: float) -> float:
    """Largest ``value`` over all ranks (unchanged in a single process)."""
    if world_size() == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def all_gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
