"""Datasets as ``(train, test)`` pairs of ``TensorDataset``s with images in [0, 1], shape N x C x H x W.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no
  download), scaled from 0..16 to [0, 1], split 75 / 25 stratified by class with a
  fixed seed -- the embedded default;
* ``mnist``: an ``.npz`` with keys ``x_train, y_train, x_test, y_test`` given by
  ``path`` or the ``AMATA_MNIST`` environment variable, else torchvision's MNIST
  under ``root`` (downloaded only when ``download=True``);
* ``cifar10``: torchvision's CIFAR-10 under ``root``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

DATASETS = ("digits", "mnist", "cifar10")
MNIST_ENV = "AMATA_MNIST"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DatasetUnavailable(RuntimeError):
    """A dataset is not on this machine and cannot be fetched; the message says how to provide it."""


def _tensors(x: np.ndarray, y: np.ndarray, scale: float) -> TensorDataset:
    x = torch.as_tensor(np.asarray(x, dtype=np.float32) / scale)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    return TensorDataset(x.contiguous(), torch.as_tensor(np.asarray(y), dtype=torch.long))


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
        with np.load(path) as f:
            missing = [k for k in NPZ_KEYS if k not in f]
            if missing:
                raise DatasetUnavailable(f"{path} lacks keys {missing}; expected {list(NPZ_KEYS)}")
            arrays = {k: f[k] for k in NPZ_KEYS}
    except (OSError, ValueError) as exc:
        raise DatasetUnavailable(f"{path} is not a readable .npz file: {exc}") from None
    scale = 255.0 if arrays["x_train"].dtype == np.uint8 else 1.0
    return (_tensors(arrays["x_train"], arrays["y_train"], scale),
            _tensors(arrays["x_test"], arrays["y_test"], scale))


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
    raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
