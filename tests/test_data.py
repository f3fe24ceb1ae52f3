import os
from pathlib import Path

import numpy as np
import pytest
import torch

from amata_lib import load
from amata_lib.infra import data as data_mod
from amata_lib.infra.data import DatasetUnavailable

SHARED_MNIST = Path(os.environ.get("AMATA_MNIST")
                    or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist.npz")


def test_digits_shapes_range_and_stratified_split():
    train, test = load("digits")
    x, y = train.tensors
    assert x.shape == (1347, 1, 8, 8) and test.tensors[0].shape == (450, 1, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.long
    assert x.min() == 0 and x.max() == 1
    test_counts = torch.bincount(test.tensors[1], minlength=10).double()
    all_counts = test_counts + torch.bincount(y, minlength=10)
    assert ((test_counts / all_counts - 0.25).abs() < 0.01).all()  # stratified 75 / 25
    again = load("digits")[0].tensors[0]
    assert torch.equal(x, again)


def _fake_npz(path, n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, n_train), x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, n_test))


def test_npz_loader_by_path_and_env(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    _fake_npz(path)
    train, test = load("mnist", path=path)
    assert train.tensors[0].shape == (20, 1, 28, 28) and test.tensors[0].shape == (10, 1, 28, 28)
    raw = np.load(path)["x_train"]
    assert torch.allclose(train.tensors[0][:, 0], torch.tensor(raw / 255.0, dtype=torch.float32))
    monkeypatch.setenv("AMATA_MNIST", str(path))
    assert len(load("mnist")[0]) == 20


def test_npz_missing_keys(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DatasetUnavailable, match="lacks keys"):
        load("mnist", path=path)
    with pytest.raises(DatasetUnavailable, match="not a file"):
        load("mnist", path=tmp_path / "none.npz")


def test_offline_mnist_error_says_how_to_provide(tmp_path, monkeypatch):
    monkeypatch.delenv("AMATA_MNIST", raising=False)
    with pytest.raises(DatasetUnavailable, match="AMATA_MNIST"):
        load("mnist", root=tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_failed_download_leaves_nothing(tmp_path, monkeypatch):
    import torchvision

    class HalfDownload:
        def __init__(self, root, train=True, download=False):
            if not download:
                raise RuntimeError("Dataset not found")
            Path(root, "MNIST", "raw").mkdir(parents=True)
            Path(root, "MNIST", "raw", "train-images-idx3-ubyte.gz").write_bytes(b"partial")
            raise OSError("connection reset")

    monkeypatch.setattr(torchvision.datasets, "MNIST", HalfDownload)
    monkeypatch.delenv("AMATA_MNIST", raising=False)
    root = tmp_path / "ds"
    with pytest.raises(DatasetUnavailable, match="downloading MNIST failed"):
        load("mnist", root=root, download=True)
    assert list(root.rglob("*")) == []


def test_unknown_dataset():
    with pytest.raises(ValueError, match="name must be one of"):
        load("imagenet")


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="MNIST .npz not found ($AMATA_MNIST or ../shared/data/mnist.npz)")
def test_real_mnist_npz():
    train, test = data_mod.load_npz(SHARED_MNIST)
    assert train.tensors[0].shape == (60000, 1, 28, 28) and len(test) == 10000
    assert train.tensors[1][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert 0.11 < float(train.tensors[0].mean()) < 0.14
