"""Datasets and minibatches.

Datasets come as ``(train, test)`` pairs of ``TensorDataset`` objects with images in [0, 1], shape N x C x H x W.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no
  download), scaled from 0..16 to [0, 1], split 75 / 25 stratified by class with a
  fixed seed -- the embedded default;
* ``mnist``: an ``.npz`` with keys ``x_train, y_train, x_test, y_test`` given by
  ``path`` or the ``AMATA_MNIST`` environment variable, else torchvision's MNIST
  under ``root`` (downloaded only when ``download=True``);
* ``cifar10``: torchvision's CIFAR-10 under ``root``.

Every loaded set is checked (:func:`check_dataset`): pixels in [0, 1] and finite,
integer labels, one label per image. Minibatches (:func:`batches`) of a
``TensorDataset`` are gathered where its tensors live (on the GPU after
:func:`to_device`); other datasets go through one persistent ``DataLoader``
(:func:`make_loader`). Under ``torchrun`` each rank takes a contiguous shard of every
global minibatch (:class:`ShardedBatchSampler`).
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from . import distributed
from .checks import check_int, check_labels, check_pixels
from .errors import UserError

DATASETS = ("digits", "mnist", "cifar10")
MNIST_ENV = "AMATA_MNIST"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


DEVICE_DATA_FRACTION = 0.25
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]
IndexedBatches = Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]


class DatasetUnavailable(UserError):
    """A dataset is not on this machine and cannot be fetched; the message says how to provide it."""


def _tensors(x: np.ndarray, y: np.ndarray, scale: float, source: str = "data") -> TensorDataset:
    """Images as float32 N x C x H x W divided by ``scale``, labels as int64; checked by :func:`check_dataset`.

    ``source`` names the data in errors, e.g. ``"mnist.npz: x_train"`` (its labels: ``y_train``).
    """
    y = np.asarray(y)
    labels = source.replace("x_", "y_") if "x_" in source else f"{source} labels"
    if y.dtype.kind not in "iu":
        raise DatasetUnavailable(f"{labels}: labels must be integers, got dtype {y.dtype}")
    if len(y) != len(x):
        raise DatasetUnavailable(f"{labels} has {len(y)} labels for {len(x)} images; they must be equally many")
    x = torch.as_tensor(np.asarray(x, dtype=np.float32) / scale)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    data = TensorDataset(x.contiguous(), torch.as_tensor(y, dtype=torch.long))
    try:
        check_dataset(source, data)
    except UserError as exc:
        raise DatasetUnavailable(str(exc)) from None
    return data


def check_dataset(name: str, dataset: Dataset, num_classes: int | None = None) -> None:
    """Refuse data that would give silently wrong numbers.

    A ``TensorDataset`` ``(x, y)`` must hold at least one example, float pixels in
    [0, 1] without NaN, and one integer label per image in ``[0, num_classes)``
    (a 1-D tensor, not one-hot). Other datasets (e.g. torchvision's with transforms)
    are only checked for being non-empty; their items are checked by the model's
    first forward pass.
    """
    if len(dataset) == 0:
        raise UserError(f"{name} is empty; it must hold at least one example")
    if not isinstance(dataset, TensorDataset):
        return
    if len(dataset.tensors) != 2:
        raise UserError(f"{name} must be a TensorDataset of (images, labels), got {len(dataset.tensors)} tensors")
    x, y = dataset.tensors
    check_pixels(f"{name} images", x)
    check_labels(f"{name} labels", y, len(x), num_classes)


def load_digits(test_size: float = 0.25, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 8x8 digits in [0, 1] with a stratified ``test_size`` split (seeded)."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(bunch.images, bunch.target, test_size=test_size,
                                              stratify=bunch.target, random_state=seed)
    return _tensors(x_tr, y_tr, 16.0), _tensors(x_te, y_te, 16.0)


def load_npz(path: str | os.PathLike) -> tuple[TensorDataset, TensorDataset]:
    """MNIST-like ``.npz`` (uint8 images, keys ``x_train, y_train, x_test, y_test``) scaled to [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise DatasetUnavailable(f"path {str(path)!r} is not a file")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in NPZ_KEYS if k not in f]
            if missing:
                raise DatasetUnavailable(f"{path} lacks keys {missing}; expected {list(NPZ_KEYS)}")
            arrays = {k: f[k] for k in NPZ_KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetUnavailable(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc}); "
                                 f"check the file or download it again") from None
    out = []
    for part in ("train", "test"):
        x = arrays[f"x_{part}"]
        if x.dtype != np.uint8 and x.dtype.kind not in "f":
            raise DatasetUnavailable(f"{path}: x_{part} must be uint8 (0..255) or floats in [0, 1], "
                                     f"got dtype {x.dtype}")
        out.append(_tensors(x, arrays[f"y_{part}"], 255.0 if x.dtype == np.uint8 else 1.0, f"{path}: x_{part}"))
    shapes = [tuple(part.tensors[0].shape[1:]) for part in out]
    if shapes[0] != shapes[1]:
        raise DatasetUnavailable(f"{path}: x_test images are {shapes[1]}, x_train images {shapes[0]}; both sets "
                                 f"must hold images of one size")
    return out[0], out[1]


def _torchvision(cls_name: str, root: Path, download: bool, hint: str) -> tuple[TensorDataset, TensorDataset]:
    """Load a torchvision dataset into tensors; a failed download leaves nothing behind."""
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    root = Path(root)
    try:
        train, test = cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)
    except RuntimeError:
        if not download:
            raise DatasetUnavailable(f"{cls_name} is not under {root}. {hint}") from None
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
        try:
            cls(str(staging), train=True, download=True)
            cls(str(staging), train=False, download=True)
            for item in staging.iterdir():
                os.replace(item, root / item.name)
        except Exception as exc:  # network errors come in many types
            raise DatasetUnavailable(f"downloading {cls_name} failed ({exc}). {hint}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        train, test = cls(str(root), train=True), cls(str(root), train=False)
    x_tr, x_te = np.asarray(train.data), np.asarray(test.data)
    return _tensors(x_tr, np.asarray(train.targets), 255.0), _tensors(x_te, np.asarray(test.targets), 255.0)


def load(name: str, *, path: str | os.PathLike | None = None, root: str | os.PathLike = "data/datasets",
         download: bool = False, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Train and test sets of dataset ``name`` (``digits``, ``mnist`` or ``cifar10``).

    Parameters
    ----------
    name : str
        Dataset name.
    path : path, optional
        For ``mnist``: an ``.npz`` file; defaults to ``$AMATA_MNIST`` when set.
    root : path
        Folder of torchvision's copies.
    download : bool
        Let torchvision download a missing dataset (needs internet).
    seed : int
        Seed of the ``digits`` train/test split.

    Raises
    ------
    DatasetUnavailable
        The dataset is missing; the message says how to provide it.
    """
    if name == "digits":
        if path is not None:
            raise UserError("path applies to mnist only; digits is bundled with scikit-learn (drop --data-path)")
        return load_digits(seed=seed)
    if name == "mnist":
        path = path or os.environ.get(MNIST_ENV)
        if path:
            return load_npz(path)
        hint = (f"Give an .npz with keys {', '.join(NPZ_KEYS)} by path=... (CLI: --data-path) or the "
                f"{MNIST_ENV} environment variable, or allow download=True on a machine with internet.")
        return _torchvision("MNIST", Path(root), download, hint)
    if name == "cifar10":
        hint = "Place torchvision's CIFAR-10 under root, or allow download=True on a machine with internet."
        return _torchvision("CIFAR10", Path(root), download, hint)
    raise UserError(f"name must be one of {DATASETS}, got {name!r}")


# ----------------------------------------------------------------------------- minibatches

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
        for x, y, _ in tensor_batches(dataset, batch_size, shuffle, generator, device, rank, world_size):
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


def tensor_batches(dataset: TensorDataset, batch_size: int, shuffle: bool, generator: torch.Generator | None,
                    device: torch.device | None, rank: int, world_size: int) -> IndexedBatches:
    """``(x, y, index)`` minibatches of a ``TensorDataset``, indexed where its tensors live."""
    x, y = dataset.tensors
    for idx in _index_batches(len(y), batch_size, shuffle, generator, rank, world_size, x.device):
        yield x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True), idx


# ----------------------------------------------------------------------------- augmentation

AUGMENTATIONS = ("none", "crop-flip")
CROP_PADDING = 4


def default_augment(dataset: str) -> str:
    """The training augmentation a dataset gets unless told otherwise: ``crop-flip`` for cifar10, else ``none``."""
    return "crop-flip" if dataset == "cifar10" else "none"


@dataclass(frozen=True)
class CropFlip:
    """One epoch's random crops and flips, one per training example (by dataset index).

    ``offsets[i] = (row, col)`` is where example ``i``'s window starts in its image
    zero-padded by ``pad`` on every side (each in ``0 .. 2 * pad``; ``(pad, pad)`` is
    no shift) and ``flips[i]`` whether the crop is then mirrored left-right.
    :func:`crop_flip` applies them.
    """

    offsets: torch.Tensor
    flips: torch.Tensor
    pad: int = CROP_PADDING

    @classmethod
    def draw(cls, n: int, generator: torch.Generator, pad: int = CROP_PADDING,
             device: torch.device | None = None) -> CropFlip:
        """Uniform offsets and fair flips for ``n`` examples from ``generator`` (CPU), moved to ``device``."""
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
        flips = torch.randint(0, 2, (n,), generator=generator).bool()
        return cls(offsets.to(device), flips.to(device), pad)

    def of(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """``(offsets, flips)`` of the examples with dataset indices ``index``."""
        return self.offsets[index], self.flips[index]


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, *, pad: int = CROP_PADDING,
              size: tuple[int, int] | None = None) -> torch.Tensor:
    """Per-example random crop and horizontal flip of a batch ``x`` (N x C x H x W), where ``x`` lives.

    Each image is zero-padded by ``pad`` pixels on every side, the window of ``size``
    (default ``H x W``) starting at ``offsets[i] = (row, col)`` is cut out, and the
    windows with ``flips[i]`` are mirrored left-right -- the same as torchvision's
    ``RandomCrop(size, padding=pad)`` followed by ``RandomHorizontalFlip()``, in one
    gather for the whole batch. ``pad=0`` with a ``size`` smaller than ``x`` cuts
    windows out of images that are padded already (e.g. a per-example store kept at
    40 x 40, as ATTA's code keeps it). Offsets must keep the windows inside the padded
    images (not checked here: that would wait for the GPU on every minibatch).

    Notes
    -----
    original | ours | why (Madry et al.'s cifar10_challenge, Wong et al.'s
    fast_adversarial ``CIFAR10/utils.py``, Zhang et al.'s Friendly-Adversarial-Training
    ``FAT.py``, Shafahi et al.'s free_adv_train, Zheng et al.'s ATTA
    ``adaptive_data_aug.py``):

    * crop and flip on the CPU per image in the data loader | on the whole batch on
      its device | keeps the ``TensorDataset`` speed (no loader, no copy back);
    * random state of the loader's workers | the trainer's shuffling generator, one draw
      per example and epoch | a checkpoint after an epoch resumes exactly;
    * ATTA pads its stored adversarial images with grey (0.5) | zero (black) padding of
      the clean image, torchvision's default used by the other references | the store's
      padding is ATTA's business (:func:`crop_flip` with ``pad=0`` reads a padded store).
    """
    if x.ndim != 4:
        raise UserError(f"crop_flip needs a batch N x C x H x W, got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    out_h, out_w = (h, w) if size is None else size
    if len(offsets) != n or len(flips) != n:
        raise UserError(f"offsets and flips need one row per image ({n}), got {len(offsets)} and {len(flips)}")
    if pad:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows, cols = window_index(offsets, flips, (out_h, out_w), x.device)
    out = x[torch.arange(n, device=x.device)[:, None, None], :, rows, cols]
    return out.permute(0, 3, 1, 2).contiguous()  # advanced indices first: N x H x W x C -> N x C x H x W


def window_index(offsets: torch.Tensor, flips: torch.Tensor, size: tuple[int, int],
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices (N x H x 1, N x 1 x W) of each example's window, columns reversed where flipped."""
    offsets = offsets.to(device)
    rows = offsets[:, :1] + torch.arange(size[0], device=device)
    cols = offsets[:, 1:] + torch.arange(size[1], device=device)
    cols = torch.where(flips.to(device)[:, None], cols.flip(1), cols)  # mirror by reading columns backwards
    return rows[:, :, None], cols[:, None, :]


def put_windows(store: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> None:
    """Undo :func:`crop_flip` (``pad=0``) in place: write each window of ``values`` back where it was cut from.

    ``store`` is N x C x H' x W' (padded), ``values`` N x C x H x W in the cropped and
    flipped frame; a flipped window is mirrored back. Pixels of ``store`` outside the
    windows keep their values (ATTA's ``inverse_atta_aug``).
    """
    n = len(values)
    rows, cols = window_index(offsets, flips, tuple(values.shape[2:]), store.device)
    store[torch.arange(n, device=store.device)[:, None, None], :, rows, cols] = values.permute(0, 2, 3, 1)


class EpochFeed:
    """Shuffled training minibatches ``(x, y, index)``, one epoch per call.

    A ``TensorDataset`` is moved to the device once and ``index`` holds the examples'
    dataset indices; other datasets share one persistent ``DataLoader`` over all
    epochs and give ``index = None``. With ``augment="crop-flip"`` (tensor data only)
    each epoch first draws one :class:`CropFlip` for the whole training set from
    ``generator`` (before the epoch's permutation) and every minibatch is cropped and
    flipped on the device; :meth:`augmentation` gives the current epoch's parameters,
    e.g. ``feed.augmentation().of(index)`` for a minibatch.
    """

    def __init__(self, dataset: Dataset, batch_size: int, generator: torch.Generator, device: torch.device,
                 rank: int, world_size: int, seed: int, augment: str = "none") -> None:
        if augment not in AUGMENTATIONS:
            raise UserError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        self.batch_size, self.generator, self.device = batch_size, generator, device
        self.rank, self.world_size, self.augment = rank, world_size, augment
        self._current: CropFlip | None = None
        if isinstance(dataset, TensorDataset):
            self.dataset, self.loader = to_device(dataset, device), None
        elif augment != "none":
            raise UserError(f"augment={augment!r} needs a TensorDataset train_set (augmented on the device), "
                            f"got {type(dataset).__name__}; put the transforms on the dataset instead")
        else:
            self.dataset = dataset
            self.loader = make_loader(dataset, batch_size, shuffle=True, generator=generator, device=device,
                                      rank=rank, world_size=world_size, seed=seed)

    def augmentation(self) -> CropFlip | None:
        """The crops and flips of the epoch being fed (``None`` before the first batch or without augmentation)."""
        return self._current

    def __call__(self) -> IndexedBatches:
        if self.loader is not None:
            return ((x, y, None) for x, y in _moved(self.loader, self.device))
        return self._tensor_epoch()

    def _tensor_epoch(self) -> IndexedBatches:
        if self.augment == "crop-flip":
            self._current = CropFlip.draw(len(self.dataset), self.generator, device=self.dataset.tensors[0].device)
        for x, y, idx in tensor_batches(self.dataset, self.batch_size, True, self.generator, self.device,
                                        self.rank, self.world_size):
            if self._current is not None:
                offsets, flips = self._current.of(idx)
                x = crop_flip(x, offsets, flips, pad=self._current.pad)
            yield x, y, idx


def epoch_feed(dataset: Dataset, batch_size: int, generator: torch.Generator, device: torch.device,
               rank: int, world_size: int, seed: int, augment: str = "none") -> EpochFeed:
    """The training feed of :class:`EpochFeed`: call it once per epoch for that epoch's minibatches."""
    return EpochFeed(dataset, batch_size, generator, device, rank, world_size, seed, augment)


def subset(dataset: Dataset, n: int | None) -> Dataset:
    """The first ``n`` examples of ``dataset`` (all of it for ``None`` or ``n >= len``); ``n >= 1``."""
    if n is not None:
        check_int("n", n)
    if n is None or n >= len(dataset):
        return dataset
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[:n] for t in dataset.tensors))
    return torch.utils.data.Subset(dataset, range(n))
