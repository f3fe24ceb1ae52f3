"""Attack overhead: time of PGD-K divided by K x (one input-gradient forward+backward).

A ratio near 1 means the attack loop adds nothing beyond the gradients it must
compute; projection, sign and bookkeeping show up as the excess over 1.

    python benchmarks/attack_overhead.py --model lenet --batch-size 128 --steps 10 40
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from amata_lib import models
from amata_lib.attacks import _input_grad, pgd
from amata_lib.results import device_name
from amata_lib.training import select_device, synchronize

SHAPES = {"lenet": (1, 28, 28), "digits_cnn": (1, 8, 8), "preact_resnet18": (3, 32, 32)}


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(SHAPES), default="lenet")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, nargs="+", default=[10, 40])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    dev = select_device(a.device)
    torch.manual_seed(0)
    model = models.build(a.model).to(dev).eval()
    x = torch.rand(a.batch_size, *SHAPES[a.model], device=dev)
    y = torch.randint(0, 10, (a.batch_size,), device=dev)
    one = timed(lambda: _input_grad(model, x, y, "ce"), dev, a.repeats * 4)
    out = {"model": a.model, "batch_size": a.batch_size, "device": device_name(dev),
           "torch": torch.__version__, "one_input_grad_s": one, "pgd": {}}
    for k in a.steps:
        t = timed(lambda: pgd(model, x, y, eps=0.3, alpha=0.01, steps=k), dev, a.repeats)
        out["pgd"][k] = {"time_s": t, "overhead": t / (k * one)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
