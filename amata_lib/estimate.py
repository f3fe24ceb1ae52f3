"""How long an experiment will take: its passes counted from the config, times a pass cost measured here.

:func:`planned_passes` counts, for every row of a config, the minibatch
forward+backward passes of training (the schedule's ``K_t + 1`` per minibatch, the
warm-up's one) and of the per-epoch and final PGD/CW evaluations (``steps + 1`` per
example, converted to minibatches of the training batch size), for every seed of the
protocol. :func:`pass_seconds` times one forward+backward pass of the config's model on
a batch of random inputs of the dataset's shape on a device (``torch.cuda.synchronize``
around the timed passes on a GPU). :func:`estimate` multiplies the two.

What it leaves out, so that the estimate is a lower bound for those parts: AutoAttack
(its cost depends on how many examples stay robust; APGD-CE + APGD-DLR on 1,000 MNIST
images took 4.9 s per 200 images on one CPU thread, the standard ensemble 48 s),
data loading and the optimiser step. Early-stopping maximizers (FOSC, FAT) and Free are
counted at the full ``K_t + 1``, an upper bound for them, and so is an adaptive
schedule, at ``K_max + 1`` plus its probes.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from .core import models
from .core.epoch import synchronize
from .core.training import select_device
from .experiments import build_schedule, lender

# input shape, training-set size, test-set size
DATA_SHAPES = {"digits": ((1, 8, 8), 1347, 450), "mnist": ((1, 28, 28), 60000, 10000),
               "cifar10": ((3, 32, 32), 50000, 10000)}


def planned_passes(cfg: dict) -> dict[str, dict]:
    """Minibatch passes of every row of ``cfg`` over all its seeds: ``{"train", "eval", "seeds"}`` per row."""
    _, n_train, n_test = DATA_SHAPES[cfg["dataset"]]
    n_train = min(n_train, cfg.get("train_subset") or n_train)
    batches = math.ceil(n_train / cfg["batch_size"])
    ev = cfg["eval"]
    n_eval = min(n_test, ev["subset"] or n_test)
    n_report = min(n_eval, ev["autoattack_n"])
    seeds = len(cfg.get("protocol", {}).get("seeds", [cfg["seed"]]))
    warmup = cfg.get("warmup", {}).get("epochs", 0) * batches
    evaluations = math.ceil(cfg["epochs"] / ev["every"])  # every ``every`` epochs and after the last
    per_eval = n_eval * (ev["pgd_steps"] + 1)
    report = n_report * ev["pgd_restarts"] * (ev["pgd_steps"] + ev["cw_steps"] + 2)
    out = {}
    lent = cfg.get("borrow", {}).get("runs", [])  # trained (under the lender's name) only when not stored
    for run in cfg["runs"] + ([r for r in lender(cfg)["runs"] if r["name"] in lent] if lent else []):
        schedule = build_schedule(run, cfg["epochs"])
        if getattr(schedule, "needs_model", False):  # adaptive: at most K_max + 1, plus a probe per epoch
            probes = math.ceil(cfg["epochs"] / schedule.every)
            probe = sum(p.passes for p in schedule.candidates) * min(schedule.probe_size, n_train) / cfg["batch_size"]
            train = warmup + batches * cfg["epochs"] * (schedule.k_max + 1) + probes * probe
        else:
            train = warmup + batches * (cfg["epochs"] if schedule is None else schedule.cost())
        out[run["name"]] = {"train": train * seeds, "eval": (evaluations * per_eval + report) * seeds
                            / cfg["batch_size"], "seeds": seeds}
    return out


def pass_seconds(cfg: dict, device: str | torch.device = "auto", repeats: int = 20) -> float:
    """Seconds of one forward+backward pass (input and weight gradients) of the config's model and batch.

    Random inputs of the dataset's shape (the arithmetic does not depend on the pixels);
    three untimed passes first; the median of ``repeats`` timed passes.
    """
    dev = select_device(device)
    shape, _, _ = DATA_SHAPES[cfg["dataset"]]
    torch.manual_seed(0)
    model = models.build(cfg["model"]).to(dev)
    x = torch.rand(cfg["batch_size"], *shape, device=dev, requires_grad=True)
    y = torch.randint(0, 10, (cfg["batch_size"],), device=dev)
    times = []
    for i in range(3 + repeats):
        synchronize(dev)
        t0 = time.perf_counter()
        F.cross_entropy(model(x), y).backward()
        synchronize(dev)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def estimate(cfg: dict, seconds_per_pass: float) -> dict:
    """Planned passes and hours per row and in total at ``seconds_per_pass`` (from :func:`pass_seconds`)."""
    rows = planned_passes(cfg)
    for row in rows.values():
        row["hours"] = (row["train"] + row["eval"]) * seconds_per_pass / 3600
    return {"seconds_per_pass": seconds_per_pass, "rows": rows,
            "total_hours": sum(r["hours"] for r in rows.values())}


def format_estimate(cfg: dict, est: dict, device: str) -> str:
    """The estimate as lines of text."""
    seeds = next(iter(est["rows"].values()))["seeds"]
    lines = [f"{cfg['name']}: {cfg['model']} on {cfg['dataset']}, batch {cfg['batch_size']}, {cfg['epochs']} epochs, "
             f"{seeds} seed(s); one pass measured at {1000 * est['seconds_per_pass']:.2f} ms on {device}"]
    width = max(14, *(len(n) for n in est["rows"]))
    for name, row in est["rows"].items():
        lines.append(f"{name:>{width}}: {row['train']:,.0f} training + {row['eval']:,.0f} evaluation passes "
                     f"-> {row['hours']:.2f} h")
    lines.append(f"{'total':>{width}}: {est['total_hours']:.2f} h (AutoAttack, data loading and optimiser steps "
                 "not included)")
    return "\n".join(lines)
