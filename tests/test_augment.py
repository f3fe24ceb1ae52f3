"""CIFAR-style training augmentation on the device: random crop of the 4-pixel zero-padded image, random flip."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from amata_lib import Constant, TrainOptions, train
from amata_lib.core.maximizers import PGDMaximizer
from amata_lib.infra.data import CropFlip, EpochFeed, crop_flip, default_augment
from amata_lib.infra.errors import UserError
from amata_lib.methods import ATTAMaximizer


def cifar_like(n: int = 48, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen))


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 15 * 15, 10))


def test_crop_is_a_shift_of_the_zero_padded_image_and_flip_mirrors():
    x = cifar_like(6).tensors[0]
    offsets = torch.tensor([[4, 4], [0, 0], [8, 8], [0, 8], [3, 5], [7, 1]])
    flips = torch.tensor([False, False, True, False, True, False])
    out = crop_flip(x, offsets, flips)
    assert out.shape == x.shape and out.is_contiguous()
    padded = F.pad(x, (4, 4, 4, 4))
    for i, ((r, c), f) in enumerate(zip(offsets.tolist(), flips.tolist())):
        window = padded[i, :, r:r + 32, c:c + 32]
        assert torch.equal(out[i], window.flip(-1) if f else window)
    assert torch.equal(out[0], x[0])  # offset (pad, pad) unflipped: the image itself
    assert torch.equal(out[1, :, :4, :], torch.zeros(3, 4, 32))  # shifted down-right: zero rows enter at the top
    assert torch.equal(out[1, :, 4:, 4:], x[1, :, :28, :28])


def test_crop_of_an_already_padded_store_with_pad_zero():
    store = torch.rand(2, 1, 40, 40)
    offsets, flips = torch.tensor([[2, 6], [8, 0]]), torch.tensor([True, False])
    out = crop_flip(store, offsets, flips, pad=0, size=(32, 32))
    assert torch.equal(out[0], store[0, :, 2:34, 6:38].flip(-1))
    assert torch.equal(out[1], store[1, :, 8:40, 0:32])


def test_drawn_offsets_stay_within_the_padding_and_cover_it():
    params = CropFlip.draw(5000, torch.Generator().manual_seed(0))
    assert params.offsets.min() == 0 and params.offsets.max() == 8
    assert set(params.offsets.flatten().tolist()) == set(range(9))
    assert 0.45 < params.flips.float().mean() < 0.55
    again = CropFlip.draw(5000, torch.Generator().manual_seed(0))
    assert torch.equal(params.offsets, again.offsets) and torch.equal(params.flips, again.flips)


def _epochs(feed, n):
    return [[(x.clone(), y.clone(), idx.clone()) for x, y, idx in feed()] for _ in range(n)]


def test_feed_batches_are_the_epochs_crops_of_the_data_and_repeat_with_the_seed():
    data = cifar_like()
    feed = EpochFeed(data, 16, torch.Generator().manual_seed(5), torch.device("cpu"), 0, 1, 0, "crop-flip")
    seen = []
    for x, y, idx in feed():
        offsets, flips = feed.augmentation().of(idx)
        assert x.shape == (len(idx), 3, 32, 32)
        assert torch.equal(x, crop_flip(data.tensors[0][idx], offsets, flips))
        assert torch.equal(y, data.tensors[1][idx])
        seen.append(idx)
    assert sorted(torch.cat(seen).tolist()) == list(range(len(data)))
    first = feed.augmentation()
    list(feed())
    assert not torch.equal(first.offsets, feed.augmentation().offsets)  # a new draw each epoch
    a = _epochs(EpochFeed(data, 16, torch.Generator().manual_seed(5), torch.device("cpu"), 0, 1, 0, "crop-flip"), 2)
    b = _epochs(EpochFeed(data, 16, torch.Generator().manual_seed(5), torch.device("cpu"), 0, 1, 0, "crop-flip"), 2)
    assert all(torch.equal(p, q) for ea, eb in zip(a, b) for ba, bb in zip(ea, eb) for p, q in zip(ba, bb))
    plain = _epochs(EpochFeed(data, 16, torch.Generator().manual_seed(5), torch.device("cpu"), 0, 1, 0), 1)
    assert all(torch.equal(x, data.tensors[0][idx]) for x, _, idx in plain[0])
    assert not all(torch.equal(x, data.tensors[0][idx]) for x, _, idx in a[0])


def test_defaults_per_dataset():
    assert default_augment("cifar10") == "crop-flip"
    assert default_augment("mnist") == default_augment("digits") == "none"


def _train(data, augment="none", **kwargs):
    torch.manual_seed(0)
    model = tiny_net()
    history = train(model, data, cifar_like(16, seed=1), eps=8 / 255, schedule=Constant(1, 8 / 255, 3), seed=2,
                    device="cpu", options=TrainOptions(batch_size=16, eval_steps=2, augment=augment), **kwargs)
    return model, history


def test_augmented_training_resumes_exactly_after_an_interrupted_epoch(tmp_path):
    data = cifar_like()
    ref_model, ref = _train(data, augment="crop-flip")
    plain_model, _ = _train(data)
    assert not all(torch.equal(p, q) for p, q in zip(ref_model.parameters(), plain_model.parameters()))

    def crash(rec, model):
        if rec["epoch"] == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        _train(data, augment="crop-flip", checkpoint=ckpt, callback=crash)
    model, history = _train(data, augment="crop-flip", checkpoint=ckpt)
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in ref]
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)


def test_a_checkpoint_without_augmentation_does_not_resume_an_augmented_run(tmp_path):
    from amata_lib.infra.errors import CheckpointError

    data, ckpt = cifar_like(), tmp_path / "run.pt"

    def stop(rec, model):
        if rec["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(data, checkpoint=ckpt, callback=stop)
    with pytest.raises(CheckpointError, match="augment"):
        _train(data, augment="crop-flip", checkpoint=ckpt)


class Following(PGDMaximizer):
    """PGD that checks, for every minibatch, that the hook's parameters are the batch's crops."""

    uses_index = True
    follows_augmentation = True

    def __init__(self, eps, data):
        super().__init__(eps)
        self.data, self.checked = data, []

    def follow_augmentation(self, current):
        self.current = current

    def perturb(self, model, x, y, plan, index=None):
        offsets, flips = self.current().of(index)
        self.checked.append(torch.equal(x, crop_flip(self.data.tensors[0][index], offsets, flips)))
        return super().perturb(model, x, y, plan, index)


def test_the_hook_gives_a_maximizer_each_batchs_crops():
    data = cifar_like()
    maximizer = Following(8 / 255, data)
    _train(data, augment="crop-flip", maximizer=maximizer)
    assert len(maximizer.checked) == 3 * 3 and all(maximizer.checked)


class Refusing(PGDMaximizer):
    """Per-example state without the hook: it cannot follow the crops."""

    uses_index = True


def test_refused_combinations():
    data = cifar_like()
    with pytest.raises(UserError, match="Refusing.*follow_augmentation"):
        _train(data, augment="crop-flip", maximizer=Refusing(8 / 255))
    with pytest.raises(UserError, match="augment"):
        _train(data, augment="mixup")
    flat = TensorDataset(data.tensors[0].flatten(1), data.tensors[1])
    with pytest.raises(UserError, match="N x C x H x W"):
        train(nn.Linear(3072, 10), flat, flat, epochs=1, eps=0.0, device="cpu",
              options=TrainOptions(augment="crop-flip"))


# ----------------------------------------------------------------------------- configs and CLI

def test_configs_default_to_crop_flip_for_cifar10_only():
    from amata_lib.experiments import ConfigError, load_config, validate_config

    assert load_config("cifar10-table2")["augment"] == "crop-flip"
    for name in ("mnist-table1", "mnist-plus", "digits-smoke"):
        assert "augment" not in load_config(name)  # none: absent, so older results keep matching
    raw = json.loads(Path(load_config.__globals__["CONFIG_DIR"], "cifar10-table2.json").read_text())
    del raw["augment"]
    assert validate_config(raw)["augment"] == "crop-flip"
    assert "augment" not in validate_config({**raw, "augment": "none"})
    with pytest.raises(ConfigError, match="augment"):
        validate_config({**raw, "augment": "flip"})


def _cli_train_kwargs(monkeypatch, tmp_path, dataset, *extra):
    from amata_lib import cli

    seen = {}

    def fake_train(model, train_set, test_set, **kwargs):
        seen.update(kwargs)
        return [{"epoch": 1, "steps": 0, "alpha": 0.0, "lr": 0.1, "epoch_time": 0.0, "time": 0.0, "passes": 1,
                 "train_loss": 1.0, "clean_acc": 0.1, "robust_acc": 0.1, "stopped": False}]

    from amata_lib import spec
    from amata_lib.infra import data as data_module

    monkeypatch.setattr(spec, "train", fake_train)
    monkeypatch.setattr(data_module, "load", lambda *a, **k: (cifar_like(), cifar_like(8)))
    monkeypatch.setattr(spec, "data_file", lambda *a, **k: {"data_sha256": None})
    cli.main(["train", "--dataset", dataset, "--method", "erm", "--epochs", "1", "--no-progress",
              "--out", str(tmp_path / "r.json"), "--checkpoint", str(tmp_path / "r.pt"), *extra])
    return seen, json.loads((tmp_path / "r.json").read_text())["config"]


def test_cli_augments_cifar10_by_default_and_not_digits(monkeypatch, tmp_path):
    seen, config = _cli_train_kwargs(monkeypatch, tmp_path, "cifar10")
    assert seen["options"].augment == "crop-flip" and config["augment"] == "crop-flip"
    seen, config = _cli_train_kwargs(monkeypatch, tmp_path / "b", "cifar10", "--augment", "none")
    assert seen["options"].augment == "none" and "augment" not in config


def test_cli_digits_trains_unaugmented(tmp_path):
    from amata_lib import cli

    cli.main(["train", "--dataset", "digits", "--method", "erm", "--epochs", "1", "--no-progress", "--eval-subset",
              "20", "--out", str(tmp_path / "r.json"), "--checkpoint", str(tmp_path / "r.pt")])
    assert "augment" not in json.loads((tmp_path / "r.json").read_text())["config"]


def test_atta_store_follows_the_crops_and_flips(monkeypatch):
    """hzzheng93/ATTA adaptive_data_aug.py: the stored (padded) perturbation is cut with the batch's crop and
    flip before the attack, and the attacked window is flipped back and written where it came from; the
    store's pixels outside the window keep their values."""
    import amata_lib.methods.atta as plus
    from amata_lib.core.schedules import Plan
    from amata_lib.infra.data import CropFlip

    starts = []
    pattern = 0.01 * torch.arange(9.0).view(1, 1, 3, 3)

    def fake_pgd(model, x, y, *, eps, alpha, steps, start):  # the "attack" adds a known pattern to its start
        starts.append(start - x)
        return start + pattern

    monkeypatch.setattr(plus, "pgd", fake_pgd)
    x = torch.rand(1, 1, 3, 3)
    y = torch.zeros(1, dtype=torch.long)
    atta = ATTAMaximizer(0.5, reset=None, start_noise=0.0)
    crops = {"now": CropFlip(torch.tensor([[0, 0]]), torch.tensor([False]), pad=1)}
    atta.follow_augmentation(lambda: crops["now"])
    atta(None, x, y, Plan(1, 0.1), index=torch.tensor([0]))
    assert atta.delta.shape == (1, 1, 5, 5)  # kept at the padded size
    assert torch.allclose(atta.delta[0, :, :3, :3], pattern[0]) and not atta.delta[0, :, 3:, :].any()
    # next epoch: window shifted by (1, 1) and flipped
    crops["now"] = CropFlip(torch.tensor([[1, 1]]), torch.tensor([True]), pad=1)
    before = atta.delta.clone()
    atta(None, x, y, Plan(1, 0.1), index=torch.tensor([0]))
    assert torch.allclose(starts[-1], before[0:1, :, 1:4, 1:4].flip(-1))  # started from the stored window, flipped
    expected = before.clone()
    expected[0, :, 1:4, 1:4] = (starts[-1] + pattern).flip(-1)  # written back mirrored
    assert torch.allclose(atta.delta, expected)
    assert torch.equal(atta.delta[0, :, 0, :], before[0, :, 0, :])  # outside the window: unchanged


def test_atta_trains_under_crop_flip():
    data = cifar_like()
    atta = ATTAMaximizer(8 / 255, reset=None)
    _, history = _train(data, augment="crop-flip", maximizer=atta)
    assert tuple(atta.delta.shape[2:]) == (40, 40) and bool(atta.stored.all()) and len(history) == 3
    assert atta.delta[:, :, :4].abs().sum() > 0  # windows shifted up have written into the top padding rows
