"""How fast adversarial training runs on this machine, and where the time goes.

For LeNet on MNIST-shaped 28x28 inputs and PreAct-ResNet-18 on CIFAR-shaped 32x32
inputs (synthetic uniform images with random labels: the arithmetic, hence the time,
does not depend on the pixels) it measures

* the attack overhead: time of PGD-K divided by K x (one input-gradient
  forward+backward) on the same batch; 1 means projection, sign and bookkeeping
  cost nothing next to the gradients;
* one training step (forward, backward, SGD step) on the same batch;
* the epoch time of PGD-10 and the mean epoch time of Amata(2, 10) over its T
  epochs, both measured by :func:`amata_lib.train` itself (evaluation excluded),
  with images x passes per second and the ratio Amata / PGD-10 beside the ratio of
  their pass counts and the ratio predicted from the two micro-benchmarks (a
  training step costs more than an attack pass: it also computes weight gradients
  and updates them); ``epoch_over_microbench`` is the measured PGD-10 epoch time over
  the one predicted from the micro-benchmarks (above 1: time lost outside the passes,
  e.g. a starving data feed);
* the achieved fraction of the device's peak FLOP rate, with the FLOPs of one
  attack pass and one training step counted by ``torch.utils.flop_counter``
  (matmuls and convolutions; element-wise work is not counted). The peak is NVIDIA's
  dense (no sparsity) datasheet number at boost clock for known GPUs (``PEAK_TFLOPS``),
  otherwise the best rate of a large matmul measured here (the CPU's practical,
  not theoretical, peak).

* ``versus``: our PGD-10 training epoch (:func:`amata_lib.train`, LeNet, MNIST-shaped
  inputs) side by side with the loop a user would otherwise write: the same minibatches
  (a shuffled in-memory index split, the cheapest feed there is, so that the ratio is
  about the training loop and not a data pipeline), the same SGD settings and model init,
  and per minibatch 10 attack passes plus one parameter step, with the attack either
  torchattacks' ``PGD`` (package ``torchattacks``, extra ``bench``; the row is skipped,
  with the reason, when it is not installed) or a plain perturbation loop in the style of
  Kolter & Madry's adversarial-robustness tutorial (written here: ``delta`` with
  ``requires_grad``, ``loss.backward()``, signed step, clipping; like the tutorial it does
  not switch the model to ``eval()``, which makes no difference to LeNet (no batch norm,
  no dropout), and its ``backward()`` also computes the weights' gradients). The
  contenders run in one process, alternating (the order rotates every repeat), each on a
  fresh identically initialised model; reported are every wall time, the medians and
  ``ours / peer`` of the medians (and the median of the per-repeat ratios, less sensitive
  to load that changes during the run), with the forward passes each contender made on training
  minibatches (counted by a hook, so the work is checked to be the same).

* ``bf16``: one LeNet PGD-10 training minibatch (10 attack passes and one step,
  :func:`amata_lib.train`'s ``amp``) in bf16 autocast over the same in fp32, alternating,
  on every device, with whether the CPU has bf16 instructions
  (:func:`amata_lib.training.cpu_has_bf16`): on a CPU without them bf16 is emulated and
  slower (5.4 x on this project's AVX2-only EPYC).

Precision: ``fp32`` (no TF32 anywhere), ``tf32`` (TF32 matmuls and convolutions, the
default on CUDA; CUDA only), ``bf16`` (``train(amp=True)``: bf16 autocast for attack and
step; CUDA or CPU).

    python benchmarks/speed.py                                  # CPU, small sizes
    python benchmarks/speed.py --device cuda --out data/benchmarks/h100-tf32.json
    python benchmarks/speed.py --device cuda --precision bf16 --channels-last --out ...
    python benchmarks/speed.py --models --threads 1    # only the versus row
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from amata_lib import Amata, Constant, LeNet, TrainOptions, train
from amata_lib.core import models
from amata_lib.core.attacks import input_grad, pgd
from amata_lib.core.schedules import relative_cost
from amata_lib.core.training import select_device, synchronize
from amata_lib.infra.results import device_name, provenance, write_json_atomic

SCHEMA = "amata-speed/1"
PRECISIONS = ("fp32", "tf32", "bf16")
MODELS = {"lenet": ((1, 28, 28), 0.3), "preact_resnet18": ((3, 32, 32), 8 / 255)}
K_PGD, K_MIN, K_MAX = 10, 2, 10
# Dense tensor-core / FP32 peaks in TFLOP/s (datasheets; sparse figures are twice these).
# First match wins: a GPU name must contain every listed fragment.
PEAK_TFLOPS = (
    (("H200", "NVL"), "NVIDIA H200 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5}),
    (("H200",), "NVIDIA H200 SXM", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}),
    (("H100", "NVL"), "NVIDIA H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5}),
    (("H100", "PCIe"), "NVIDIA H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.5}),
    (("H100",), "NVIDIA H100 SXM", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}),
    (("A100",), "NVIDIA A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}),
)


def table_peak(name: str, precision: str) -> tuple[float, str] | None:
    """Datasheet peak (FLOP/s) and its label for a GPU named ``name``, or ``None`` if unknown."""
    for fragments, label, peaks in PEAK_TFLOPS:
        if all(f.lower() in name.lower() for f in fragments):
            return peaks[precision] * 1e12, f"datasheet: {label}, {precision} dense"
    return None


def measured_peak(device: torch.device, precision: str, n: int, repeats: int) -> float:
    """Best FLOP rate of an ``n`` x ``n`` matmul in the precision's dtype."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / timed(lambda: a @ b, device, repeats, best=True)


def peak(device: torch.device, precision: str, n: int, repeats: int) -> dict:
    """Peak FLOP rate to divide by: the datasheet's for a known GPU, else a measured matmul."""
    if device.type == "cuda":
        known = table_peak(torch.cuda.get_device_name(device), precision)
        if known is not None:
            return {"flops_per_s": known[0], "source": known[1]}
    rate = measured_peak(device, precision, n, repeats)
    return {"flops_per_s": rate, "source": f"measured: best of {repeats} {n}x{n} {precision} matmuls"}


def set_precision(device: torch.device, precision: str) -> None:
    """TF32 switches for CUDA; elsewhere fp32 or bf16 autocast (no TF32)."""
    if device.type != "cuda":
        if precision == "tf32":
            raise ValueError(f"precision 'tf32' needs CUDA, got device {device.type!r}")
        return
    tf32 = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True


def timed(fn: Callable[[], object], device: torch.device, repeats: int, best: bool = False) -> float:
    """Median (or best) wall time of ``fn()`` over ``repeats`` runs after one warm-up, GPU-synchronised."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times) if best else sorted(times)[len(times) // 2]


def pass_flops(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> dict:
    """FLOPs per image of one attack pass (input gradient) and one training step (parameter gradient)."""
    n = 4
    x = torch.rand(n, *shape, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    model.eval().requires_grad_(False)
    with FlopCounterMode(display=False) as attack:
        F.cross_entropy(model(x.requires_grad_(True)), y, reduction="sum").backward()
    model.train().requires_grad_(True)
    with FlopCounterMode(display=False) as step:
        F.cross_entropy(model(x.detach()), y).backward()
    model.zero_grad(set_to_none=True)
    return {"attack_pass_per_image": attack.get_total_flops() / n, "train_step_per_image": step.get_total_flops() / n}


def micro(model: nn.Module, shape: tuple[int, ...], eps: float, batch: int, steps: int, device: torch.device,
          amp: bool, channels_last: bool, repeats: int) -> dict:
    """Attack overhead and training-step time at batch ``batch``."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    x = torch.rand(batch, *shape, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def attack_pass() -> None:
        with autocast:
            input_grad(model, x, y, "ce")

    def attack() -> None:
        with autocast:
            pgd(model, x, y, eps=eps, alpha=2.5 * eps / steps, steps=steps)

    def step() -> None:
        with autocast:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.eval()
    one = timed(attack_pass, device, 4 * repeats)
    full = timed(attack, device, repeats)
    model.train()
    return {"batch_size": batch, "steps": steps, "input_grad_pass_s": one, "pgd_s": full,
            "attack_overhead": full / (steps * one), "attack_image_passes_per_s": batch * steps / full,
            "train_step_s": timed(step, device, 4 * repeats)}


def run_epochs(name: str, data: TensorDataset, schedule, eps: float, batch: int, device: torch.device,
               amp: bool, channels_last: bool) -> list[dict]:
    """Train a fresh model on ``data`` under ``schedule`` and return its history (evaluation is negligible)."""
    torch.manual_seed(0)
    tiny_test = TensorDataset(*(t[:2] for t in data.tensors))
    return train(models.build(name), data, tiny_test, epochs=schedule.epochs, eps=eps, schedule=schedule,
                 device=device,
                 options=TrainOptions(batch_size=batch, amp=amp, channels_last=channels_last, eval_steps=1,
                                      eval_every=schedule.epochs))


def summarise(history: list[dict], n_images: int, flops: dict, peak_flops: float) -> dict:
    """Epoch times, images x passes per second and achieved fraction of peak for one run."""
    times = [h["epoch_time"] for h in history]
    image_passes = sum((h["steps"] + 1) * n_images for h in history)
    work = sum(n_images * (h["steps"] * flops["attack_pass_per_image"] + flops["train_step_per_image"])
               for h in history)
    return {"steps": [h["steps"] for h in history], "epoch_times_s": times,
            "mean_epoch_time_s": sum(times) / len(times), "image_passes_per_s": image_passes / sum(times),
            "flops_per_s": work / sum(times), "peak_fraction": work / sum(times) / peak_flops}


def bench_model(name: str, a: argparse.Namespace, device: torch.device, peak_flops: float) -> dict:
    """Every measurement for one model."""
    shape, eps = MODELS[name]
    resnet = name == "preact_resnet18"
    batch = a.resnet_batch_size if resnet else a.batch_size
    n_images = a.resnet_n_images if resnet else a.n_images
    amp = a.precision == "bf16"
    torch.manual_seed(0)
    flops = pass_flops(models.build(name).to(device), shape, device)
    torch.manual_seed(0)
    out = {"input_shape": list(shape), "eps": eps, "n_images": n_images, "flops": flops,
           "micro": micro(models.build(name), shape, eps, batch, a.overhead_steps, device, amp,
                          a.channels_last, a.repeats)}
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(n_images, *shape, generator=g), torch.randint(0, 10, (n_images,), generator=g))
    tau = 2.5 * eps
    run_epochs(name, TensorDataset(*(t[:2 * batch] for t in data.tensors)), Constant(2, tau / 2, 1), eps, batch,
               device, amp, a.channels_last)  # warm-up: allocator, cuDNN autotuning
    pgd10 = Constant(K_PGD, tau / K_PGD, a.pgd_epochs)
    amata = Amata(K_MIN, K_MAX, tau, a.amata_epochs)
    out["pgd10"] = summarise(run_epochs(name, data, pgd10, eps, batch, device, amp, a.channels_last),
                             n_images, flops, peak_flops)
    out["amata"] = summarise(run_epochs(name, data, amata, eps, batch, device, amp, a.channels_last),
                             n_images, flops, peak_flops)
    out["amata"]["relative_passes"] = relative_cost(amata)
    total_amata = sum(out["amata"]["epoch_times_s"])
    out["amata_over_pgd10_time"] = total_amata / (a.amata_epochs * out["pgd10"]["mean_epoch_time_s"])
    m = out["micro"]
    epoch_cost = lambda k: k * m["input_grad_pass_s"] + m["train_step_s"]  # noqa: E731  one minibatch
    out["pgd10"]["epoch_over_microbench"] = (out["pgd10"]["mean_epoch_time_s"]
                                             / (-(-n_images // batch) * epoch_cost(K_PGD)))
    out["amata"]["relative_time_from_microbench"] = (sum(epoch_cost(p.steps) for p in amata.plans())
                                                     / (a.amata_epochs * epoch_cost(K_PGD)))
    return out


# --------------------------------------------------------------------------- ours versus the peer loops
VERSUS_PEERS = {
    "torchattacks_pgd_loop": "torchattacks.PGD(model, eps, alpha, steps=10, random_start=True) + SGD step",
    "kolter_madry_loop": "plain delta loop (Kolter & Madry tutorial style, loss.backward()) + SGD step",
}


def load_torchattacks():
    """``(module, None)``, or ``(None, reason)`` when torchattacks cannot be imported."""
    try:
        import torchattacks
    except Exception as exc:  # ImportError, or a broken install
        return None, (f"torchattacks is not importable ({type(exc).__name__}: {exc}); "
                      "install it with: pip install -e '.[bench]'")
    return torchattacks, None


def kolter_madry_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
                     steps: int) -> torch.Tensor:
    """L-infinity PGD as the tutorial teaches it: ascend on a perturbation, clip to the ball and the pixels."""
    delta = torch.empty_like(x).uniform_(-eps, eps)
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()  # also accumulates the weights' .grad; the step's zero_grad clears it
        delta.data = (delta.data + alpha * delta.grad.sign()).clamp(-eps, eps)
        delta.data = (x + delta.data).clamp(0, 1) - x
        delta.grad.zero_()
    return (x + delta).detach()


def peer_epoch(model: nn.Module, data: TensorDataset, attack: Callable, batch: int, seed: int) -> None:
    """One epoch of the loop a user writes: shuffled minibatches, attack, one SGD step (``train``'s defaults)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x_all, y_all = data.tensors
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(seed)).to(x_all.device)
    for idx in order.split(batch):
        x, y = x_all[idx], y_all[idx]
        x_adv = attack(model, x, y)
        loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def versus(n_images: int, batch: int, repeats: int, device: torch.device) -> dict:
    """Our PGD-10 epoch against the peer loops, alternating in this process; see the module docstring."""
    shape, eps = MODELS["lenet"]
    alpha = 2.5 * eps / K_PGD
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(n_images, *shape, generator=g).to(device),
                         torch.randint(0, 10, (n_images,), generator=g).to(device))
    one = TensorDataset(*(t[:1] for t in data.tensors))  # train() evaluates on one image: a pass of batch 1

    def ours(model: nn.Module, seed: int) -> None:
        train(model, data, one, epochs=1, eps=eps, schedule=Constant(K_PGD, alpha, 1), seed=seed, device=device,
              options=TrainOptions(batch_size=batch, eval_steps=1))

    def kolter_madry(model: nn.Module, seed: int) -> None:
        peer_epoch(model, data, lambda m, x, y: kolter_madry_pgd(m, x, y, eps, alpha, K_PGD), batch, seed)

    contenders = {"amata_lib": ours, "kolter_madry_loop": kolter_madry}
    skipped = {}
    torchattacks, reason = load_torchattacks()
    if torchattacks is None:
        skipped["torchattacks_pgd_loop"] = reason
    else:
        def torchattacks_loop(model: nn.Module, seed: int) -> None:
            atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=K_PGD, random_start=True)
            peer_epoch(model, data, lambda m, x, y: atk(x, y), batch, seed)
        contenders["torchattacks_pgd_loop"] = torchattacks_loop

    def run(name: str, seed: int) -> tuple[float, int]:
        torch.manual_seed(seed)
        model = LeNet().to(device)
        passes = 0

        def count(module: nn.Module, args: tuple) -> None:  # training minibatches only, not the 1-image test
            nonlocal passes
            passes += len(args[0]) > 1

        hook = model.register_forward_pre_hook(count)
        synchronize(device)
        t0 = time.perf_counter()
        contenders[name](model, seed)
        synchronize(device)
        elapsed = time.perf_counter() - t0
        hook.remove()
        return elapsed, passes

    names = list(contenders)
    for name in names:
        run(name, 0)  # warm-up
    times = {name: [] for name in names}
    passes = {}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            elapsed, passes[name] = run(name, r + 1)
            times[name].append(elapsed)
    median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    out = {"model": "lenet", "input_shape": list(shape), "n_images": n_images, "batch_size": batch,
           "steps": K_PGD, "eps": eps, "alpha": alpha, "repeats": repeats,
           "minibatches": -(-n_images // batch), "peers": {k: v for k, v in VERSUS_PEERS.items() if k in contenders},
           "torchattacks_version": getattr(torchattacks, "__version__", None),
           "epoch_times_s": times, "median_epoch_time_s": median,
           "forward_passes_per_epoch": passes,
           "ours_over_peer": {name: median["amata_lib"] / median[name] for name in names if name != "amata_lib"},
           # median over repeats of the ratio within one repeat (the contenders ran back to back)
           "ours_over_peer_paired": {name: sorted(a / b for a, b in zip(times["amata_lib"], times[name]))[repeats // 2]
                                     for name in names if name != "amata_lib"},
           "skipped": skipped}
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1 (default: auto)")
    p.add_argument("--models", nargs="*", choices=sorted(MODELS), default=sorted(MODELS),
                   help="models of the per-model measurements (none: only the versus row)")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="default: tf32 on CUDA, fp32 elsewhere")
    p.add_argument("--channels-last", action="store_true", help="channels_last model and batches")
    p.add_argument("--batch-size", type=int, default=128, help="LeNet batch (default: 128)")
    p.add_argument("--n-images", type=int, default=None, help="LeNet epoch size (default: 10240 CUDA, 256 CPU)")
    p.add_argument("--resnet-batch-size", type=int, default=None, help="default: 128 CUDA, 8 CPU")
    p.add_argument("--resnet-n-images", type=int, default=None, help="default: 10240 CUDA, 8 CPU")
    p.add_argument("--pgd-epochs", type=int, default=None, help="PGD-10 epochs timed (default: 2 CUDA, 1 CPU)")
    p.add_argument("--amata-epochs", type=int, default=None, help="T of Amata(2, 10) (default: 5 CUDA, 3 CPU)")
    p.add_argument("--overhead-steps", type=int, default=K_PGD, help="K of the attack-overhead test (default: 10)")
    p.add_argument("--repeats", type=int, default=5, help="repeats of each micro-benchmark (default: 5)")
    p.add_argument("--matmul-size", type=int, default=None, help="n of the peak matmul (default: 8192 GPU, 1024 CPU)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument("--versus-n-images", type=int, default=None,
                   help="epoch size of the versus row (default: 10240 CUDA, 512 CPU)")
    p.add_argument("--no-versus", action="store_true", help="skip the row of ours versus the peer loops")
    p.add_argument("--out", default=None, help="JSON file to write (default: print only)")
    a = p.parse_args(argv)
    gpu = select_device(a.device).type == "cuda"
    defaults = dict(precision="tf32" if gpu else "fp32", n_images=10240 if gpu else 256,
                    resnet_batch_size=128 if gpu else 8, resnet_n_images=10240 if gpu else 8,
                    pgd_epochs=2 if gpu else 1, amata_epochs=5 if gpu else 3, matmul_size=8192 if gpu else 1024,
                    versus_n_images=10240 if gpu else 512)
    for key, value in defaults.items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    for key in ("batch_size", "n_images", "resnet_batch_size", "resnet_n_images", "pgd_epochs", "amata_epochs",
                "overhead_steps", "repeats", "matmul_size", "threads", "versus_n_images"):
        if getattr(a, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(a, key)}")
    if a.batch_size < 2 or a.versus_n_images % a.batch_size == 1:
        p.error("the versus row counts passes of batches larger than 1: need --batch-size >= 2 and "
                "--versus-n-images not 1 more than a multiple of it")
    return a


def bf16_ratio(device: torch.device, batch: int, repeats: int) -> dict:
    """Time of one LeNet PGD-10 training minibatch in bf16 autocast over fp32 (alternating, medians)."""
    from amata_lib.core.maximizers import PGDMaximizer
    from amata_lib.core.schedules import Plan
    from amata_lib.core.training import cpu_has_bf16
    torch.manual_seed(0)
    model = LeNet().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    maximizer, plan = PGDMaximizer(0.3), Plan(10, 0.03)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(repeats + 1):
        for name in ("fp32", "bf16"):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=name == "bf16"):
                synchronize(device)
                t0 = time.perf_counter()
                maximizer.step(model, model, opt, x, y, plan)
                synchronize(device)
            if i:  # the first round warms up
                times[name].append(time.perf_counter() - t0)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"batch_size": batch, "repeats": repeats, "times_s": times, "median_s": med,
            "bf16_over_fp32": med["bf16"] / med["fp32"],
            "cpu_has_bf16": cpu_has_bf16() if device.type == "cpu" else None}


def main(argv: list[str] | None = None) -> dict:
    a = parse(argv)
    torch.set_num_threads(a.threads)
    device = select_device(a.device)
    set_precision(device, a.precision)
    load_before = os.getloadavg()
    peak_info = peak(device, a.precision, a.matmul_size, a.repeats)
    result = {
        "schema": SCHEMA,
        "provenance": provenance(device, "python " + " ".join(shlex.quote(s) for s in sys.argv)),
        "settings": {"device": device_name(device), "precision": a.precision, "channels_last": a.channels_last,
                     "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                     "cudnn_benchmark": torch.backends.cudnn.benchmark, "pgd_epochs": a.pgd_epochs,
                     "amata": {"k_min": K_MIN, "k_max": K_MAX, "epochs": a.amata_epochs}},
        "peak": peak_info,
        "models": {name: bench_model(name, a, device, peak_info["flops_per_s"]) for name in a.models},
    }
    if not a.no_versus:
        result["versus"] = versus(a.versus_n_images, a.batch_size, a.repeats, device)
    result["bf16"] = bf16_ratio(device, a.batch_size, a.repeats)
    result["settings"]["load_average_1min"] = [load_before[0], os.getloadavg()[0]]
    for name, r in result["models"].items():
        m = r["micro"]
        print(f"{name}: attack overhead PGD-{m['steps']} / ({m['steps']} x input-grad pass) = "
              f"{m['attack_overhead']:.3f}; PGD-10 epoch {r['pgd10']['mean_epoch_time_s']:.3f} s "
              f"({r['pgd10']['image_passes_per_s']:.0f} image-passes/s, "
              f"{100 * r['pgd10']['peak_fraction']:.2f} % of peak); Amata(2,10) mean epoch "
              f"{r['amata']['mean_epoch_time_s']:.3f} s; Amata/PGD-10 time {r['amata_over_pgd10_time']:.3f} "
              f"(passes {r['amata']['relative_passes']:.3f}, "
              f"micro-benchmarks {r['amata']['relative_time_from_microbench']:.3f})")
    v = result.get("versus")
    if v:
        for peer, ratio in v["ours_over_peer"].items():
            print(f"versus: LeNet PGD-10 epoch of {v['n_images']} images, ours / {peer} = {ratio:.3f} "
                  f"(medians of {v['repeats']}: {v['median_epoch_time_s']['amata_lib']:.3f} s vs "
                  f"{v['median_epoch_time_s'][peer]:.3f} s; median per-repeat ratio "
                  f"{v['ours_over_peer_paired'][peer]:.3f}; forward passes "
                  f"{v['forward_passes_per_epoch']['amata_lib']} vs {v['forward_passes_per_epoch'][peer]})")
        for peer, reason in v["skipped"].items():
            print(f"versus: {peer} skipped: {reason}")
    b = result["bf16"]
    print(f"bf16: LeNet PGD-10 minibatch of {b['batch_size']}, bf16 / fp32 time = {b['bf16_over_fp32']:.3f}"
          + ("" if b["cpu_has_bf16"] is None else f" (CPU bf16 instructions: {b['cpu_has_bf16']})"))
    if a.out:
        print(f"wrote {write_json_atomic(Path(a.out), result)}")
    return result


if __name__ == "__main__":
    main()
