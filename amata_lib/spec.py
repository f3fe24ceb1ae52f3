"""One run description and one entry: a validated :class:`RunSpec`, and :func:`run` that trains it.

A run is fixed by its settings (data set, model, threat model ``eps``, epochs, outer
optimiser, evaluation, an optional clean warm-up) and one *row*: the schedule
(``method`` and its parameters) and the maximizer that uses it (:class:`RowSpec`).
The command line (``python -m amata_lib train``), every row of an experiment config
(:mod:`amata_lib.experiments`) and the warm-up all become a :class:`RunSpec` and go
through :func:`run`, so what a config can do, the command line can do.

``eps`` and ``epochs`` are given once, in the settings; the schedule is built over
``epochs`` and the maximizer with ``eps``. Derived defaults -- Madry et al.'s travel
``tau = 2.5 eps`` and ``alpha = tau / K`` -- come from :func:`defaults` alone, which
calls :func:`~amata_lib.core.schedules.travel`.

The schema is declarative (pydantic v2 models): types, bounds and allowed values are
stated once per field, unknown keys are refused, and a validation error names the
path of the bad field (:func:`spec_error`: ``field 'runs[2].k'``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from torch.utils.data import Dataset

from .core import models
from .core.evaluation import robustness_report
from .core.history import epoch_line
from .core.maximizers import Maximizer
from .core.optim import LR_SCHEDULES, OPTIMIZERS
from .core.schedules import ROUNDINGS, Amata, Constant, Exponential, Schedule, Step, travel
from .core.training import TrainOptions, train
from .infra.checks import check_choice
from .infra.data import AUGMENTATIONS, DATASETS, MNIST_ENV, default_augment, load, subset
from .infra.errors import UserError
from .methods import MAXIMIZERS, EarlyStopRollback, build_maximizer
from .study.adaptive import Adaptive

METHOD_PARAMS: dict[str, tuple[str, ...]] = {
    "erm": (), "pgd": ("k", "alpha"), "constant": ("k", "alpha"), "amata": ("k_min", "k_max", "tau", "rounding"),
    "exponential": ("k_min", "k_max", "tau", "rounding"), "step": ("stages", "tau"),
    "adaptive": ("k_min", "k_max", "tau", "gamma", "probe_size", "probe_every", "monotone")}
METHODS = tuple(METHOD_PARAMS)
OPTIONAL_PARAMS = ("rounding", "probe_size", "probe_every", "monotone")
SCHEDULE_PARAMS = ("k", "alpha", "k_min", "k_max", "tau", "rounding", "stages", "gamma", "probe_size",
                   "probe_every", "monotone")
MAXIMIZER_NAMES = tuple(sorted(set(MAXIMIZERS) - {"clean"}))
MODEL_NAMES = tuple(sorted(models.MODELS))
AUTOATTACK_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
RUN_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MAX_EPOCHS = 100_000
MAX_STEPS = 10_000
MAX_SEED = 2 ** 32 - 1  # torch and NumPy seeds are below 2**32
Log = Callable[[str], None]


# ----------------------------------------------------------------------------- the schedule by name

def defaults(method: str, eps: float, **given: Any) -> dict:
    """The schedule parameters of ``method`` with the defaults filled in: the one place of the travel rule.

    ``pgd``/``constant``: ``k = 10`` and ``alpha = tau / k`` with ``tau`` given or
    :func:`~amata_lib.core.schedules.travel` (``2.5 * eps``); giving both ``alpha`` and
    ``tau`` is an error. ``amata``/``exponential``/``adaptive``: ``k_min = 2``, ``k_max = 10``,
    ``tau = travel(eps)`` (adaptive also ``gamma = 0``); ``step``: ``stages = [2, 5, 10]``.
    """
    check_choice("method", method, METHODS)
    params = {k: v for k, v in given.items() if v is not None}
    if method in ("pgd", "constant"):
        params.setdefault("k", 10)
        if "tau" in params and "alpha" in params:
            raise UserError(f"method {method!r} takes alpha, or tau to set alpha = tau / k, not both")
        if "alpha" not in params:
            params["alpha"] = params.pop("tau", travel(eps)) / params["k"]
    elif method in ("amata", "exponential"):
        params = {"k_min": 2, "k_max": 10, "tau": travel(eps), **params}
    elif method == "adaptive":
        params = {"k_min": 2, "k_max": 10, "tau": travel(eps), "gamma": 0.0, **params}
    elif method == "step":
        params = {"stages": [2, 5, 10], "tau": travel(eps), **params}
    return params


def make_schedule(method: str, epochs: int, **params: Any) -> Schedule | None:
    """The schedule of ``method`` (a key of ``METHOD_PARAMS``) over ``epochs``; ``None`` for ERM.

    ``pgd``/``constant`` take ``k`` and ``alpha``; ``amata``/``exponential`` take
    ``k_min``, ``k_max``, ``tau`` and optionally ``rounding``; ``step`` takes ``stages``
    and ``tau``; ``adaptive`` (:class:`~amata_lib.study.adaptive.Adaptive`, plans chosen
    during training by Eq. 14) takes ``k_min``, ``k_max``, ``tau``, ``gamma`` and optionally
    ``probe_size``, ``probe_every`` and ``monotone``. A parameter the method does not use
    is an error (it would be ignored).

    Raises
    ------
    UserError
        Unknown method, a missing or unused parameter, or a bad value.
    """
    check_choice("method", method, METHODS)
    wanted = METHOD_PARAMS[method]
    unused = [p for p in params if p not in wanted]
    if unused:
        raise UserError(f"{unused[0]} is not used by method {method!r} (it takes {', '.join(wanted) or 'nothing'})")
    missing = [p for p in wanted if p not in params and p not in OPTIONAL_PARAMS]
    if missing:
        raise UserError(f"method {method!r} needs {', '.join(missing)}")
    if method == "erm":
        return None
    if method in ("pgd", "constant"):
        return Constant(params["k"], params["alpha"], epochs)
    if method == "step":
        return Step(params["stages"], params["tau"], epochs)
    if method == "adaptive":
        return Adaptive(params["k_min"], params["k_max"], params["tau"], epochs, gamma=params["gamma"],
                        probe_size=params.get("probe_size", 128), every=params.get("probe_every", 1),
                        monotone=params.get("monotone", False))
    cls = Amata if method == "amata" else Exponential
    return cls(params["k_min"], params["k_max"], params["tau"], epochs, rounding=params.get("rounding", "round"))


# ----------------------------------------------------------------------------- the schema

def _fraction(value: Any) -> Any:
    """``"8/255"`` -> ``8 / 255`` (configs may write eps as a fraction); other values pass through."""
    if isinstance(value, str):
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"must be a number or a fraction like '8/255', got {value!r}") from None
    return value


Number = Annotated[float, BeforeValidator(_fraction), Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, BeforeValidator(_fraction), Field(gt=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1)]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
Name = Annotated[str, StringConstraints(pattern=RUN_NAME)]


class Strict(BaseModel):
    """Base of every schema here: unknown keys are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class EvalSpec(Strict):
    """How a run is evaluated: per epoch (PGD, one restart) and in the final report (PGD, CW, AutoAttack)."""

    pgd_steps: Steps
    pgd_restarts: Count
    cw_steps: Steps
    autoattack_n: Count
    every: Count
    subset: Count | None
    autoattack_attacks: Annotated[list[Literal[AUTOATTACK_ATTACKS]], Field(min_length=1)] | None = None


class EarlyStopSpec(Strict):
    """Wong et al.'s early stopping (:class:`~amata_lib.methods.EarlyStopRollback`) on the first training minibatch."""

    drop: Annotated[Number, Field(le=1)] = 0.2
    steps: Steps = 5


class WarmupSpec(Strict):
    """Clean (ERM) epochs before the schedule starts (every row of a seed starts from the same weights)."""

    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)]


class RowSpec(Strict):
    """One row of a table: the schedule (``method`` and its parameters) and the maximizer that uses it."""

    name: Name
    method: Literal[METHODS]
    k: Steps | None = None
    alpha: Positive | None = None
    k_min: Steps | None = None
    k_max: Steps | None = None
    tau: Positive | None = None
    rounding: Literal[ROUNDINGS] | None = None
    stages: Annotated[list[Steps], Field(min_length=1)] | None = None
    gamma: Number | None = None
    probe_size: Count | None = None
    probe_every: Count | None = None
    monotone: bool | None = None
    maximizer: Literal[MAXIMIZER_NAMES] | None = None
    maximizer_kwargs: dict[str, Any] | None = None
    detect_overfitting: bool | None = None
    lr_schedule: Literal[LR_SCHEDULES] | None = None
    early_stop: EarlyStopSpec | None = None

    @model_validator(mode="after")
    def _fits_method(self) -> RowSpec:
        wanted = METHOD_PARAMS[self.method]
        given = [p for p in SCHEDULE_PARAMS if getattr(self, p) is not None]
        unused = [p for p in given if p not in wanted]
        if unused:
            raise ValueError(f"{unused[0]} is not used by method {self.method!r} (it takes "
                             f"{', '.join(wanted) or 'nothing'})")
        missing = [p for p in wanted if p not in given and p not in OPTIONAL_PARAMS]
        if missing:
            raise ValueError(f"lacks {missing} (method {self.method!r})")
        if self.k_min is not None and self.k_max is not None and self.k_min > self.k_max:
            raise ValueError(f"k_min must be <= k_max, got {self.k_min} > {self.k_max}")
        if self.method == "erm" and (self.maximizer not in (None, "clean") or self.maximizer_kwargs):
            raise ValueError(f"method 'erm' trains on clean data, got maximizer {self.maximizer!r}")
        return self

    def schedule_params(self) -> dict:
        """The parameters :func:`make_schedule` takes for this row."""
        return {p: getattr(self, p) for p in METHOD_PARAMS[self.method] if getattr(self, p) is not None}

    def as_dict(self) -> dict:
        """The row as stored in results: method parameters, then maximizer fields (not for ERM)."""
        out: dict[str, Any] = {"name": self.name, "method": self.method, **self.schedule_params()}
        if self.method in ("amata", "exponential"):
            out["rounding"] = self.rounding or "round"
        if self.detect_overfitting is not None:  # only when given, so older results keep matching
            out["detect_overfitting"] = self.detect_overfitting
        if self.lr_schedule is not None:  # the row's own learning-rate schedule, else the experiment's
            out["lr_schedule"] = self.lr_schedule
        if self.early_stop is not None:
            out["early_stop"] = self.early_stop.model_dump()
        if self.method != "erm":
            out["maximizer"] = self.maximizer or "pgd"
            out["maximizer_kwargs"] = dict(self.maximizer_kwargs or {})
        return out


class Settings(Strict):
    """What every row of an experiment shares: data, model, threat model, epochs, optimiser, evaluation."""

    dataset: Literal[DATASETS]
    model: Literal[MODEL_NAMES]
    eps: Annotated[Number, Field(le=1)]
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
    batch_size: Count
    optimizer: Literal[OPTIMIZERS]
    lr: Positive
    lr_schedule: Literal[LR_SCHEDULES]
    momentum: Annotated[Number, Field(le=1)]
    weight_decay: Number
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)]
    augment: Literal[AUGMENTATIONS] | None = None
    train_subset: Count | None = None
    warmup: WarmupSpec | None = None
    eval: EvalSpec


class RunSpec(Settings):
    """One training run, complete: the shared settings and one row.

    Beyond a config's settings: ``amp`` and ``channels_last`` (speed, see
    :class:`~amata_lib.core.training.TrainOptions`) and ``epoch_restarts``, the restarts of
    the per-epoch PGD test (1 in every experiment; ``eval.pgd_restarts`` is the final report's).
    """

    run: RowSpec
    amp: bool = False
    channels_last: bool = False
    epoch_restarts: Count = 1

    def schedule(self) -> Schedule | None:
        """The row's per-epoch plan ``(K_t, alpha_t)`` over ``epochs``; ``None`` for ERM."""
        return make_schedule(self.run.method, self.epochs, **self.run.schedule_params())

    def maximizer(self) -> Maximizer:
        """The row's inner maximizer with radius ``eps`` (``Clean`` for ERM)."""
        if self.run.method == "erm":
            return build_maximizer("clean", self.eps)
        return build_maximizer(self.run.maximizer or "pgd", self.eps, **(self.run.maximizer_kwargs or {}))

    def options(self) -> TrainOptions:
        """The trainer's optimisation and evaluation settings."""
        return TrainOptions(optimizer=self.optimizer, lr=self.lr, momentum=self.momentum,
                            weight_decay=self.weight_decay, lr_schedule=self.run.lr_schedule or self.lr_schedule,
                            batch_size=self.batch_size, amp=self.amp, channels_last=self.channels_last,
                            augment=self.augment or default_augment(self.dataset), eval_steps=self.eval.pgd_steps,
                            eval_restarts=self.epoch_restarts, eval_subset=self.eval.subset,
                            eval_every=self.eval.every,
                            detect_overfitting=bool(self.run.detect_overfitting))

    def warmup_spec(self) -> RunSpec | None:
        """The clean warm-up as a run of its own: ERM for ``warmup.epochs`` at a constant rate, tested cheaply."""
        if self.warmup is None:
            return None
        return self.model_copy(update={
            "epochs": self.warmup.epochs, "lr_schedule": "constant", "warmup": None, "amp": False,
            "channels_last": False, "augment": "none", "epoch_restarts": 1,
            "eval": EvalSpec(pgd_steps=1, pgd_restarts=1, cw_steps=1, autoattack_n=1, every=1,
                             subset=100),
            "run": RowSpec(name=f"{self.run.name}-warmup", method="erm")})


def _location(loc: tuple) -> str:
    """``('runs', 2, 'k')`` -> ``runs[2].k``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def spec_error(exc: ValidationError, names: Callable[[str], str] = lambda f: f"field {f!r}") -> str:
    """The first error of a pydantic ``ValidationError`` as one line naming its field."""
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        where, last = _location(loc[:-1]) or "config", loc[-1]
        return f"{names(where)} lacks [{last!r}]"
    if err["type"] == "extra_forbidden":
        where = _location(loc[:-1]) or "config"
        return f"{names(where)} has unknown keys [{loc[-1]!r}]"
    got = "" if err["type"] == "value_error" else f", got {err.get('input')!r:.60}"
    where = _location(loc)
    return f"{names(where)}: {message}{got}" if where else f"{message}{got}"


def run_spec(raw: Any, source: str = "run") -> RunSpec:
    """A :class:`RunSpec` from plain data, checked; the schedule and maximizer are built once to check them.

    Raises
    ------
    UserError
        Naming ``source`` and the first bad field.
    """
    if isinstance(raw, RunSpec):
        return raw
    try:
        spec = RunSpec.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{source}: {spec_error(exc)}") from None
    spec.schedule()
    spec.maximizer()
    return spec


# ----------------------------------------------------------------------------- running one

def data_file(dataset: str, data_path: str | None) -> dict:
    """Which file the data came from (``--data-path`` or ``$AMATA_MNIST``) and its SHA-256, if any."""
    path = data_path or (os.environ.get(MNIST_ENV) if dataset == "mnist" else None)
    if not path or not Path(path).is_file():
        return {"data_path": path, "data_sha256": None}
    return {"data_path": str(path), "data_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


@dataclass
class Trained:
    """What :func:`run` returns: the trained model, its history, the data it saw and its warm-up's cost."""

    model: torch.nn.Module
    history: list[dict]
    train_set: Dataset
    test_set: Dataset
    warmup: dict | None


def _callback(spec: RunSpec, train_set: Dataset, log: Log | None, extra: Callable | None) -> Callable | None:
    """The trainer callback of a run: its early stopping (first training minibatch), the epoch log, ``extra``."""
    stop = None
    if spec.run.early_stop is not None:
        first = [train_set[i] for i in range(min(spec.batch_size, len(train_set)))]
        x, y = torch.stack([ex[0] for ex in first]), torch.as_tensor([int(ex[1]) for ex in first])
        stop = EarlyStopRollback(x, y, eps=spec.eps, steps=spec.run.early_stop.steps, drop=spec.run.early_stop.drop,
                                 seed=spec.seed)
    if stop is None and log is None and extra is None:
        return None

    def callback(record: dict, model: torch.nn.Module) -> bool:
        stopped = bool(stop(record, model)) if stop is not None else False
        if log is not None:
            log(f"[{spec.run.name}] " + epoch_line(record, spec.epochs))
        if extra is not None:
            stopped = bool(extra(record, model)) or stopped
        return stopped
    return callback


def run(spec: RunSpec | dict, *, datasets: tuple[Dataset, Dataset] | None = None, data_path: str | None = None,
        data_root: str | os.PathLike = "data/datasets", download: bool = False, device: str | torch.device = "auto",
        checkpoint: str | os.PathLike | None = None, callback: Callable | None = None, log: Log | None = None,
        progress: bool = False) -> Trained:
    """Train the run ``spec`` describes: load its data, build its model, warm up, then train its row.

    Parameters
    ----------
    spec : RunSpec or dict
        The run (a dict is validated into a :class:`RunSpec`).
    datasets : tuple of Dataset, optional
        The loaded ``(train_set, test_set)`` (else loaded from ``spec.dataset`` with ``data_path``,
        ``data_root``, ``download``); ``spec.train_subset`` is applied here.
    device, checkpoint, progress
        As for :func:`~amata_lib.core.training.train`.
    callback : callable, optional
        ``callback(record, model)`` after each epoch, after the run's own early stopping and log.
    log : callable, optional
        Receives one line per epoch (and the warm-up's, and a resume's), prefixed with the row's name.

    Notes
    -----
    The model is built after ``torch.manual_seed(spec.seed)``, so its initial weights are
    the seed's; the warm-up (``spec.warmup``) is ERM at a constant rate on the same
    seed, tested on 100 images, and its passes and seconds are returned in ``warmup``.
    """
    spec = run_spec(spec)
    if datasets is None:
        datasets = load(spec.dataset, path=data_path, root=data_root, download=download)
    train_set, test_set = subset(datasets[0], spec.train_subset), datasets[1]
    torch.manual_seed(spec.seed)
    model = models.build(spec.model)
    warmup = None
    clean = spec.warmup_spec()
    if clean is not None:
        history = train(model, train_set, test_set, eps=clean.eps, epochs=clean.epochs, options=clean.options(),
                        seed=clean.seed, device=device)
        last = history[-1]
        if log:
            log(f"[{spec.run.name}] warm-up: {last['epoch']} clean epoch(s), clean accuracy "
                f"{100 * last['clean_acc']:.1f}% on 100 test images, {last['time']:.1f}s")
        warmup = {"epochs": last["epoch"], "time": last["time"], "passes": last["passes"]}
    if log and checkpoint is not None and Path(checkpoint).exists():
        log(f"[{spec.run.name}] resuming from {checkpoint}")
    schedule = spec.schedule()
    history = train(model, train_set, test_set, schedule=schedule, maximizer=spec.maximizer(),
                    eps=spec.eps if schedule is None else None, epochs=spec.epochs, options=spec.options(),
                    seed=spec.seed, device=device, checkpoint=checkpoint,
                    callback=_callback(spec, train_set, log, callback), progress=progress)
    return Trained(model=model, history=history, train_set=train_set, test_set=test_set, warmup=warmup)


def report(spec: RunSpec, model: torch.nn.Module, test_set: Dataset, *, standard_autoattack: bool = False) -> dict:
    """The final robustness report of a trained run on the first ``eval.subset`` test images.

    Clean, PGD (``eval.pgd_steps`` steps, ``eval.pgd_restarts`` restarts), CW and AutoAttack
    (``eval.autoattack_attacks``, or the standard ensemble when unset or ``standard_autoattack``)
    on the first ``eval.autoattack_n`` of them, seeded by ``spec.seed`` so that a resumed run
    reports the same numbers, with the gradient-masking checks of
    :func:`~amata_lib.core.evaluation.robustness_report`.
    """
    ev = spec.eval
    test_eval = subset(test_set, ev.subset)
    attacks = None if standard_autoattack else ev.autoattack_attacks
    out = robustness_report(model, test_eval, eps=spec.eps, pgd_steps=ev.pgd_steps, pgd_restarts=ev.pgd_restarts,
                            cw_steps=ev.cw_steps, autoattack_n=min(ev.autoattack_n, len(test_eval)),
                            autoattack_version="standard" if attacks is None else "custom",
                            autoattack_attacks=attacks, seed=spec.seed)
    out["autoattack_attacks"] = "standard" if attacks is None else list(attacks)
    return out
