"""The criterion C over whole trainings: the paper's Table 1 ordering, tested with seeds, several gamma, two co-states.

:func:`run_study` trains each strategy of the paper's Table 1 (PGD-10, -20, -40 and the
two Amata settings, all at the travel ``tau = 2.5 eps``) on ``digits`` for each seed, and
after every ``measure_every``-th epoch measures on a fixed probe batch:

* the exact ``C`` of Eq. 14 over the grid ``G`` (:func:`~amata_lib.study.criterion.grid_gains`)
  at every ``gamma`` of the study, from one evaluation of the grid;
* the same with the co-state taken from a strong attack
  (``reference``: :func:`~amata_lib.study.convergence.reference_attack`), our variant;
* the mean FOSC of the epoch's plan.

After the last epoch it records PGD-20 accuracy on the whole test split and the passes
spent. The verdict rule is fixed in ``RULE`` before any run: the paper's ordering
*holds in a seed* (for one gamma and one co-state) when both Amata settings have a lower
mean ``C`` than each of PGD-10, PGD-20 and PGD-40.

Results go to one JSON file with provenance, rewritten atomically after each finished
(strategy, seed); the same command resumes after an interruption and refuses a file of
other settings. ``python -m amata_lib criterion --help``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..core import models
from ..core.attacks import fosc, pgd
from ..core.evaluation import pgd_accuracy
from ..core.schedules import Amata, Constant, Plan, step_for, travel
from ..core.training import TrainOptions, train
from ..infra.checkpoints import differences
from ..infra.checks import check_int
from ..infra.data import load
from ..infra.errors import UserError
from ..infra.io import read_json
from ..infra.nn import eval_mode
from ..infra.results import ResultError, provenance, write_json_atomic
from .convergence import reference_attack
from .criterion import GridSpace, criterion_c_exact_gammas

SCHEMA = "amata-criterion-study/1"
RULE = ("The paper's ordering holds in a seed (for one gamma and one co-state) when both Amata settings have a "
        "lower mean C over the measured epochs than each of PGD-10, PGD-20 and PGD-40. Fixed before any run.")
STRATEGIES = ("Amata (setting 1)", "Amata (setting 2)", "PGD-10", "PGD-20", "PGD-40")
Log = Callable[[str], None]


def strategies(eps: float, epochs: int) -> dict[str, object]:
    """The schedules of the paper's Table 1 at the travel ``tau = 2.5 eps``: Amata (5, 40), (10, 40), PGD-10/20/40."""
    tau = travel(eps)
    return {"Amata (setting 1)": Amata(5, 40, tau, epochs), "Amata (setting 2)": Amata(10, 40, tau, epochs),
            "PGD-10": Constant(10, tau / 10, epochs), "PGD-20": Constant(20, tau / 20, epochs),
            "PGD-40": Constant(40, tau / 40, epochs)}


def study_settings(*, epochs: int = 30, seeds: tuple[int, ...] = (0, 1, 2), measure_every: int = 10,
                   gammas: tuple[float, ...] = (0.0, 1e-4, 1e-3, 0.04), eps: float = 0.2, probe: int = 128,
                   ref_steps: int = 50, k_hi: int = 40,
                   alphas: tuple[float, ...] = (0.01, 0.02, 0.04, 0.07, 0.12, 0.2)) -> dict:
    """The settings of a study, checked; they are stored with the results and must match on resume."""
    check_int("epochs", epochs)
    check_int("measure_every", measure_every)
    check_int("probe", probe)
    check_int("ref_steps", ref_steps)
    if measure_every > epochs:
        raise UserError(f"measure_every must be <= epochs ({epochs}), got {measure_every}")
    if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise UserError(f"seeds must be distinct integers >= 0, got {list(seeds)}")
    if not gammas or any(not isinstance(g, (int, float)) or g < 0 for g in gammas):
        raise UserError(f"gammas must be numbers >= 0, got {list(gammas)}")
    GridSpace(k_lo=1, k_hi=k_hi, alphas=tuple(alphas))  # checks the grid
    return {"dataset": "digits", "model": "digits_cnn", "eps": eps, "epochs": epochs, "seeds": list(seeds),
            "measure_epochs": list(range(measure_every, epochs + 1, measure_every)), "gammas": list(gammas),
            "probe": probe, "ref_steps": ref_steps, "grid": {"k_lo": 1, "k_hi": k_hi, "alphas": list(alphas)},
            "training": "amata_lib.train defaults: SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 128",
            "final_eval": "PGD-20 (alpha = 2.5 eps / 20, one random start) on all 450 test images",
            "rule": RULE}


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan, settings: dict,
            seed: int) -> dict:
    """C at every gamma with Eq. 14's co-state and with a strong attack's, and the plan's mean FOSC."""
    grid = settings["grid"]
    ks, alphas, eps = range(grid["k_lo"], grid["k_hi"] + 1), grid["alphas"], settings["eps"]
    out = {"plan": [plan.steps, plan.alpha]}
    with eval_mode(model):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            x_ref = reference_attack(model, x, y, eps=eps, steps=settings["ref_steps"])
        for name, ref in (("eq14", None), ("strong", x_ref)):
            results = criterion_c_exact_gammas(model, x, y, plan, eps=eps, gammas=settings["gammas"], ks=ks,
                                               alphas=alphas, reference=ref)
            out[name] = {str(g): {"c": r.c, "best": [r.best.steps, r.best.alpha]} for g, r in results.items()}
            out[f"{name}_passes"] = next(iter(results.values())).passes
        x_adv = pgd(model, x, y, eps=eps, alpha=plan.alpha, steps=plan.steps, random_start=False)
        out["fosc"] = float(fosc(model, x_adv, x, y, eps).mean())
    return out


def _unit(name: str, schedule: object, seed: int, settings: dict, data: tuple, log: Log | None) -> dict:
    """Train one strategy with one seed, measuring C after the study's epochs."""
    train_set, test_set = data
    x, y = train_set.tensors[0][:settings["probe"]], train_set.tensors[1][:settings["probe"]]
    points, start = [], time.perf_counter()

    def callback(record: dict, model: torch.nn.Module) -> None:
        if record["epoch"] in settings["measure_epochs"]:
            points.append({"epoch": record["epoch"],
                           **measure(model, x, y, Plan(record["steps"], record["alpha"]), settings, seed)})
            if log:
                c = points[-1]["eq14"][str(settings["gammas"][0])]["c"]
                log(f"[{name}, seed {seed}] epoch {record['epoch']}: C(gamma={settings['gammas'][0]:g}) {c:.4f}")

    torch.manual_seed(seed)
    model = models.build(settings["model"])
    history = train(model, train_set, test_set, schedule=schedule, eps=settings["eps"], seed=seed,
                    options=TrainOptions(eval_every=settings["epochs"], eval_subset=100), callback=callback)
    eps = settings["eps"]
    robust = pgd_accuracy(model, test_set, eps=eps, alpha=step_for(eps, 20), steps=20)
    return {"strategy": name, "seed": seed, "points": points, "robust_acc": robust,
            "clean_acc": history[-1]["clean_acc"], "passes": history[-1]["passes"],
            "train_time": history[-1]["time"], "wall_time": time.perf_counter() - start}


def run_study(out: str | Path, *, log: Log | None = print, command: str | None = None, **kwargs) -> dict:
    """Run (or resume) the study with :func:`study_settings` ``kwargs``; write and return the record."""
    settings = study_settings(**kwargs)
    out = Path(out)
    record = {"schema": SCHEMA, "settings": settings, "units": []}
    if out.exists():
        stored = load_study(out)
        diff = differences(stored["settings"], settings)
        if diff:
            raise ResultError(f"{out} holds a study with other settings ({'; '.join(diff[:4])}); delete it or "
                              f"choose another --out")
        record["units"] = stored["units"]
    done = {(u["strategy"], u["seed"]) for u in record["units"]}
    data = load(settings["dataset"])
    for seed in settings["seeds"]:
        for name, schedule in strategies(settings["eps"], settings["epochs"]).items():
            if (name, seed) in done:
                continue
            record["units"].append(_unit(name, schedule, seed, settings, data, log))
            record["provenance"] = provenance("cpu", command)
            write_json_atomic(out, record)
            if log:
                u = record["units"][-1]
                log(f"[{name}, seed {seed}] done: PGD-20 {u['robust_acc']:.1%}, {u['passes']} passes -> {out}")
    return record


def load_study(path: str | Path) -> dict:
    """A stored study, checked for its schema."""
    record = read_json(path, ResultError)
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ResultError(f"{path}: not a criterion study (schema {SCHEMA!r} expected)")
    return record


def mean_c(record: dict, *, co_state: str = "eq14", gamma: float | None = None) -> dict[str, dict[int, float]]:
    """Mean C over the measured epochs, per strategy and seed, for one co-state (``eq14`` / ``strong``) and gamma."""
    if co_state not in ("eq14", "strong"):
        raise UserError(f"co_state must be 'eq14' or 'strong', got {co_state!r}")
    gammas = record["settings"]["gammas"]
    gamma = gammas[0] if gamma is None else gamma
    if gamma not in gammas:
        raise UserError(f"gamma must be one of the study's {gammas}, got {gamma!r}")
    out: dict[str, dict[int, float]] = {}
    for u in record["units"]:
        out.setdefault(u["strategy"], {})[u["seed"]] = float(np.mean([p[co_state][str(gamma)]["c"]
                                                                      for p in u["points"]]))
    return out


def ordering_holds(record: dict, *, co_state: str = "eq14", gamma: float | None = None) -> dict[int, bool]:
    """Per seed with every strategy finished: whether ``RULE``'s ordering holds."""
    c = mean_c(record, co_state=co_state, gamma=gamma)
    seeds = [s for s in record["settings"]["seeds"] if all(s in c.get(name, {}) for name in STRATEGIES)]
    amata, pgds = STRATEGIES[:2], STRATEGIES[2:]
    return {s: max(c[a][s] for a in amata) < min(c[p][s] for p in pgds) for s in seeds}
