"""Data-parallel training (gloo, 2 CPU processes) and the trainer's data paths that serve it.

Everything runs on the CPU, also on machines with a GPU (whose paths benchmarks/gpu_checks.py covers).
"""
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset, TensorDataset

from amata_lib import Constant, DigitsCNN, TrainOptions, load, train
from amata_lib.core.attacks import attack_loss, project
from amata_lib.core.maximizers import Maximizer, PGDMaximizer
from amata_lib.infra import distributed
from amata_lib.infra.data import ShardedBatchSampler, batches

EPOCHS, BATCH = 3, 128


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the reference matches the single-threaded workers, and the shared CPU is spared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class MapStyle(Dataset):
    """A dataset that is not a TensorDataset, so the trainer takes the DataLoader path."""

    def __init__(self, ds):
        self.x, self.y = ds.tensors

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_shard_bounds_partition_every_range():
    for n in (0, 1, 5, 67, 128):
        for world in (1, 2, 3, 8):
            parts = [distributed.shard_bounds(10, 10 + n, r, world) for r in range(world)]
            assert parts[0][0] == 10 and parts[-1][1] == 10 + n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="rank"):
        distributed.shard_bounds(0, 4, 2, 2)


def test_rank_shards_reassemble_the_global_batches():
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    whole = list(ShardedBatchSampler(300, 128, shuffle=True, generator=g()))
    shards = [list(ShardedBatchSampler(300, 128, shuffle=True, generator=g(), rank=r, world_size=3))
              for r in range(3)]
    assert [len(b) for b in whole] == [128, 128, 44]
    assert [sum((s[i] for s in shards), []) for i in range(3)] == whole
    x = torch.arange(300.0)[:, None]
    ds = TensorDataset(x, torch.arange(300))
    tensor_path = [yb.tolist() for _, yb in batches(ds, 128, shuffle=True, generator=g(), rank=1, world_size=3)]
    assert tensor_path == shards[1]


def test_single_process_helpers_without_torchrun(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert distributed.init_from_env() is False
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.all_sum([1, 2.5]) == [1.0, 2.5] and distributed.all_max(3) == 3.0
    assert distributed.rank_seed(5) == 5 and distributed.all_gather("a") == ["a"]


def test_bad_torchrun_environment_is_named(monkeypatch):
    monkeypatch.setenv("RANK", "x")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="RANK must be an integer"):
        distributed.init_from_env()


def test_dataloader_path_matches_tensor_path(digits):
    train_set, test_set = digits
    runs = []
    for ds in (train_set, MapStyle(train_set)):
        torch.manual_seed(0)
        model = DigitsCNN()
        history = train(model, ds, test_set, epochs=2, eps=0.2, schedule=Constant(2, 0.1, 2), device="cpu",
                        options=TrainOptions(eval_every=2))
        runs.append((model, history))
    (a, ha), (b, hb) = runs
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_channels_last_gives_the_same_training(digits):
    runs = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = DigitsCNN()
        runs.append(train(model, *digits, epochs=1, eps=0.2, schedule=Constant(2, 0.1, 1), device="cpu",
                          options=TrainOptions(channels_last=channels_last)))
    assert runs[1][-1]["train_loss"] == pytest.approx(runs[0][-1]["train_loss"], rel=1e-4)
    flat = TensorDataset(digits[0].tensors[0].flatten(1), digits[0].tensors[1])
    with pytest.raises(ValueError, match="channels_last"):
        train(DigitsCNN(), flat, digits[1], epochs=1, eps=0.2, device="cpu", options=TrainOptions(channels_last=True))


def test_shards_too_small_for_the_processes_are_refused(digits, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 200)
    with pytest.raises(ValueError, match="batch_size=128"):
        train(DigitsCNN(), *digits, epochs=1, eps=0.2, device="cpu")


def test_resume_needs_the_same_number_of_processes(digits, tmp_path):
    ckpt = tmp_path / "run.pt"
    torch.manual_seed(0)
    train(DigitsCNN(), *digits, epochs=1, eps=0.2, schedule=Constant(1, 0.2, 2), checkpoint=ckpt, device="cpu")
    state = torch.load(ckpt, weights_only=True)
    state["world_size"] = 2
    torch.save(state, ckpt)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="world_size=2"):
        train(DigitsCNN(), *digits, epochs=1, eps=0.2, schedule=Constant(1, 0.2, 2), checkpoint=ckpt, device="cpu")


class GradientAscent(Maximizer):
    """PGD-like inner maximizer taking plain (unsigned, unnormalised) input-gradient steps.

    PGD's sign, like any normalised direction, is discontinuous where a gradient is tiny,
    and confidently classified examples have tiny gradients computed with cancellation
    (1 - p for p close to 1): float-level differences between one process and two
    (summation order) then flip steps and grow epoch after epoch. A plain gradient step
    is Lipschitz in the weights, so the two runs stay comparable to float precision.
    """

    name = "gradient-ascent"

    def perturb(self, model, x, y, plan, index=None):
        x_adv = x.clone()
        for _ in range(plan.steps):
            x_adv.requires_grad_(True)
            (g,) = torch.autograd.grad(attack_loss(model(x_adv), y).sum(), x_adv)
            x_adv = project(x_adv.detach() + plan.alpha * g, x, self.eps)
        return x_adv


def _config(epochs=EPOCHS, maximizer=None):
    return dict(schedule=Constant(3, 0.1, epochs), maximizer=maximizer or GradientAscent(0.2), device="cpu",
                options=TrainOptions(batch_size=BATCH, eval_every=epochs, eval_subset=200))


def _pgd_config():
    """One epoch of deterministic PGD (no random start): sign steps agree while weights agree."""
    return _config(1, PGDMaximizer(0.2, random_start=False))


def _stop_at_two(record, model):
    if record["epoch"] == 2:
        raise KeyboardInterrupt


def _join(rank, world, port):
    """Make this spawned process rank ``rank`` of a gloo group on the CPU, as torchrun would."""
    import os
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert distributed.init_from_env("cpu")


def _trainer_runs(rank, out):
    """The trainer's runs on each rank (rank{rank}.pt): own checkpoint, interrupted and resumed, one PGD epoch."""
    digits = load("digits")
    torch.manual_seed(0)
    model = DigitsCNN()
    history = train(model, *digits, **_config(), checkpoint=out / f"own-{rank}.pt")
    shared = out / "shared.pt"
    torch.manual_seed(0)
    try:
        train(DigitsCNN(), *digits, **_config(), checkpoint=shared, callback=_stop_at_two)
    except KeyboardInterrupt:
        pass
    torch.manual_seed(0)  # the same run: same initial weights (part of the checkpoint's settings)
    resumed_model = DigitsCNN()
    resumed = train(resumed_model, *digits, **_config(), checkpoint=shared)
    torch.manual_seed(0)
    pgd_model = DigitsCNN()
    train(pgd_model, *digits, **_pgd_config())
    torch.save({"history": history, "state": model.state_dict(), "resumed": resumed,
                "resumed_state": resumed_model.state_dict(), "pgd_state": pgd_model.state_dict()},
               out / f"rank{rank}.pt")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_global_batch(digits, spawned):
    tmp_path = spawned
    torch.manual_seed(0)
    ref_model = DigitsCNN()
    ref = train(ref_model, *digits, **_config())
    torch.manual_seed(0)
    ref_pgd = DigitsCNN()
    train(ref_pgd, *digits, **_pgd_config())
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # bookkeeping is identical on every rank
    assert ranks[0]["history"] == ranks[1]["history"]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name])
    # and the run equals one process with the same global batch
    ddp = ranks[0]["history"]
    assert [h["passes"] for h in ddp] == [h["passes"] for h in ref] == [4 * 11 * k for k in (1, 2, 3)]
    assert [h["train_loss"] for h in ddp] == pytest.approx([h["train_loss"] for h in ref], rel=1e-5)
    for ours, ref_state in ((ranks[0]["state"], ref_model.state_dict()), (ranks[0]["pgd_state"], ref_pgd.state_dict())):
        for name, value in ref_state.items():
            torch.testing.assert_close(ours[name], value, rtol=1e-5, atol=1e-6)
    assert ddp[-1]["clean_acc"] == pytest.approx(ref[-1]["clean_acc"], abs=0.011)
    # only rank 0 writes checkpoints; an interrupted run resumes to the uninterrupted result
    assert (tmp_path / "own-0.pt").exists() and not (tmp_path / "own-1.pt").exists()
    untimed = lambda h: [{k: v for k, v in r.items() if "time" not in k} for r in h]  # noqa: E731
    assert untimed(ranks[0]["resumed"]) == untimed(ranks[0]["history"])
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[0]["resumed_state"][name])


def _plus_runs():
    """Free and YOPO at eps = 0: no perturbation, so no random start or sign step makes the ranks differ."""
    from amata_lib.methods import FreeMaximizer, YOPOMaximizer
    train_set, test_set = load("digits")
    train_set = TensorDataset(*(t[:259] for t in train_set.tensors))  # minibatches 128, 128 and 3 (2 + 1)
    out = {}
    for name, maximizer in (("free", FreeMaximizer(0.0)), ("yopo", YOPOMaximizer(0.0, n=2))):
        torch.manual_seed(0)
        model = DigitsCNN()
        history = train(model, train_set, test_set, epochs=1, eps=0.0, schedule=Constant(2, 0.1, 1),
                        maximizer=maximizer, device="cpu", options=TrainOptions(batch_size=BATCH, eval_subset=100))
        out[name] = (history, model.state_dict())
    return out


def _plus_runs_of_rank(rank, out):
    """Free and YOPO on each rank (plus{rank}.pt), and Free at eps > 0 uninterrupted, interrupted and resumed."""
    runs = _plus_runs()
    # Free at eps > 0 carries each rank's own perturbation; a resumed run must continue with it
    from amata_lib.methods import FreeMaximizer
    train_set, test_set = load("digits")
    args = dict(schedule=Constant(2, 0.2, 3), device="cpu", options=TrainOptions(batch_size=BATCH, eval_subset=50))
    finals = []
    for ckpt, callback in ((None, None), (out / "free.pt", _stop_at_two), (out / "free.pt", None)):
        torch.manual_seed(0)
        model = DigitsCNN()
        try:
            train(model, train_set, test_set, maximizer=FreeMaximizer(0.2), checkpoint=ckpt, callback=callback,
                  **args)
        except KeyboardInterrupt:
            continue
        finals.append(model.state_dict())
    runs["free_resumed"] = finals
    torch.save(runs, out / f"plus{rank}.pt")


def _worker(rank, world, port, out):
    """One rank of the gloo group that serves both data-parallel tests below (a process start imports torch,
    so one pair of processes runs the trainer's and the own-step methods' runs, one after the other)."""
    _join(rank, world, port)
    _trainer_runs(rank, out)
    _plus_runs_of_rank(rank, out)
    distributed.shutdown()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """The folder where two spawned processes (ranks 0 and 1, as torchrun would start them) left their runs."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    return out


@pytest.mark.slow
def test_own_step_methods_train_data_parallel(spawned):
    """Free and YOPO take their own parameter steps through DDP (with the trainer's loss scaling for the
    uneven last minibatch, 3 = 2 + 1): two processes equal one process with the global batch."""
    tmp_path = spawned
    ranks = [torch.load(tmp_path / f"plus{r}.pt", weights_only=True) for r in range(2)]
    ref = _plus_runs()
    for name in ("free", "yopo"):
        (h0, s0), (h1, s1) = ranks[0][name], ranks[1][name]
        assert h0 == h1 and h0[-1]["passes"] == ref[name][0][-1]["passes"] == 3 * 2  # 3 minibatches, m = 2
        assert h0[-1]["train_loss"] == pytest.approx(ref[name][0][-1]["train_loss"], rel=1e-5)
        for key, value in ref[name][1].items():
            assert torch.equal(s0[key], s1[key])
            torch.testing.assert_close(s0[key], value, rtol=1e-4, atol=1e-6,
                                       msg=lambda m, name=name, key=key: f"{name} {key}: {m}")
    uninterrupted, resumed = ranks[0]["free_resumed"]
    for key, value in uninterrupted.items():
        assert torch.equal(value, resumed[key]), key
