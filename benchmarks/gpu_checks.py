"""Checks of the trainer's CUDA paths that the CPU test suite cannot make; run on a machine with a GPU.

    python benchmarks/gpu_checks.py        # one PASS/FAIL/SKIP line per check; exit status 1 on a FAIL

* the attack (PGD, CE and CW losses) launches no host-device synchronisation;
* one epoch of ``train`` synchronises a fixed number of times, not once per minibatch;
* a ``TensorDataset`` is moved to the GPU once;
* an interrupted CUDA run resumes from its checkpoint;
* fp32 training on the GPU follows CPU training (ERM on digits, same seed);
* bf16 autocast + ``channels_last`` train to a finite loss, and the DataLoader path
  (pinned, persistent workers) matches the tensor path;
* with two or more GPUs: two NCCL processes equal one process with the global batch.
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset, TensorDataset

from amata_lib import Constant, DigitsCNN, LeNet, TrainOptions, load, pgd, train
from amata_lib.infra import distributed
from amata_lib.infra.data import to_device

DEV = torch.device("cuda", 0)


class MapStyle(Dataset):
    """Not a TensorDataset, so ``train`` takes the DataLoader path."""

    def __init__(self, ds: TensorDataset) -> None:
        self.x, self.y = ds.tensors

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def synthetic(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def check_attack_does_not_sync() -> str:
    model = LeNet().to(DEV).eval()
    x, y = torch.rand(128, 1, 28, 28, device=DEV), torch.randint(0, 10, (128,), device=DEV)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for loss in ("ce", "cw"):
            pgd(model, x, y, eps=0.3, alpha=0.03, steps=10, loss=loss)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "PGD-10 (ce, cw) ran under sync debug mode 'error'"


def _sync_warnings(n_images: int) -> int:
    torch.manual_seed(0)
    data = synthetic(n_images)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(LeNet(), data, TensorDataset(*(t[:2] for t in data.tensors)), epochs=1, eps=0.3,
                  schedule=Constant(2, 0.1, 1), device=DEV, options=TrainOptions(eval_steps=1))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def check_epoch_syncs_do_not_grow_with_batches() -> str:
    few, many = _sync_warnings(4 * 128), _sync_warnings(16 * 128)
    assert few == many, f"{few} syncs for 4 minibatches but {many} for 16"
    return f"{few} synchronising calls per train() call, for 4 and for 16 minibatches"


def check_tensor_dataset_moves_once() -> str:
    moved = to_device(synthetic(256), DEV)
    assert all(t.device.type == "cuda" for t in moved.tensors)
    return "to_device put both tensors on the GPU"


def check_gpu_follows_cpu() -> str:
    digits = load("digits")
    losses = []
    for device in ("cpu", DEV):
        torch.manual_seed(0)
        losses.append([h["train_loss"] for h in train(DigitsCNN(), *digits, epochs=3, eps=0.2, device=device,
                                                      options=TrainOptions(eval_every=3))])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-3, atol=1e-4)
    return f"ERM train losses CPU {[round(v, 4) for v in losses[0]]} vs GPU {[round(v, 4) for v in losses[1]]}"


def check_bf16_channels_last_and_loader() -> str:
    data = synthetic(1024)
    test = TensorDataset(*(t[:64] for t in data.tensors))
    out = []
    for ds, amp, cl in ((data, True, True), (data, False, False), (MapStyle(data), False, False)):
        torch.manual_seed(0)
        h = train(LeNet(), ds, test, epochs=2, eps=0.3, schedule=Constant(3, 0.1, 2), device=DEV,
                  options=TrainOptions(amp=amp, channels_last=cl, eval_every=2))
        out.append(h[-1]["train_loss"])
    assert all(torch.isfinite(torch.tensor(out))), out
    assert abs(out[1] - out[2]) < 1e-3 * abs(out[1]) + 1e-4, f"tensor path {out[1]} vs DataLoader {out[2]}"
    return f"last train loss bf16+channels_last {out[0]:.4f}, fp32 tensors {out[1]:.4f}, fp32 DataLoader {out[2]:.4f}"


def check_resume_on_gpu() -> str:
    digits = load("digits")
    path = Path(tempfile.mkdtemp()) / "run.pt"

    def crash(record: dict, model: torch.nn.Module) -> None:
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    runs = []
    for checkpoint, callback in ((None, None), (path, crash), (path, None)):
        torch.manual_seed(0)
        try:
            runs.append(train(DigitsCNN(), *digits, epochs=3, eps=0.2, schedule=Constant(2, 0.1, 3), device=DEV,
                              checkpoint=checkpoint, callback=callback))
        except KeyboardInterrupt:
            pass
    ref, resumed = runs
    assert [r["passes"] for r in resumed] == [r["passes"] for r in ref]
    torch.testing.assert_close([r["train_loss"] for r in resumed], [r["train_loss"] for r in ref],
                               rtol=1e-3, atol=1e-4)
    return f"interrupted after epoch 1 and resumed: losses {[round(r['train_loss'], 4) for r in resumed]}"


def _nccl_worker(rank: int, port: int, q) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    assert distributed.init_from_env("cuda")
    digits = load("digits")
    torch.manual_seed(0)
    model = DigitsCNN()
    h = train(model, *digits, epochs=2, eps=0.2, device="cuda", options=TrainOptions(eval_every=2))
    if rank == 0:
        q.put(([r["train_loss"] for r in h], [p.detach().cpu() for p in model.parameters()]))
    distributed.shutdown()


def check_nccl_two_processes() -> str:
    if torch.cuda.device_count() < 2:
        return "SKIP: needs 2 GPUs"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    mp.spawn(_nccl_worker, args=(port, q), nprocs=2)
    losses, params = q.get()
    torch.manual_seed(0)
    model = DigitsCNN()
    ref = train(model, *load("digits"), epochs=2, eps=0.2, device=DEV, options=TrainOptions(eval_every=2))
    torch.testing.assert_close(losses, [r["train_loss"] for r in ref], rtol=1e-4, atol=1e-5)
    for p, q_ in zip(params, model.parameters()):
        torch.testing.assert_close(p, q_.detach().cpu(), rtol=1e-3, atol=1e-5)
    return "2 NCCL processes (ERM, batch 64 each) equal 1 process with batch 128"


CHECKS: list[Callable[[], str]] = [check_attack_does_not_sync, check_epoch_syncs_do_not_grow_with_batches,
                                   check_tensor_dataset_moves_once, check_gpu_follows_cpu,
                                   check_bf16_channels_last_and_loader, check_resume_on_gpu,
                                   check_nccl_two_processes]


def main() -> int:
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device")
        return 0
    print(f"device: {torch.cuda.get_device_name(DEV)}, torch {torch.__version__}")
    failed = 0
    for check in CHECKS:
        try:
            message = check()
            print(f"{'SKIP' if message.startswith('SKIP') else 'PASS'} {check.__name__}: {message}")
        except Exception as exc:  # report every check, then fail
            failed += 1
            print(f"FAIL {check.__name__}: {type(exc).__name__}: {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
