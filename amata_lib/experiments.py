"""Named, versioned experiments: a JSON config per table of the paper, run by name, results kept.

A config (``amata_lib/configs/NAME.json``) fixes the dataset, model, threat model
``eps``, the outer optimiser and a list of *runs* -- one per row of a table. Each run
says how the inner maximization is scheduled (``method``: ``erm``, ``pgd`` or its
synonym ``constant`` (the plan ``K = k``, step ``alpha`` every epoch), ``amata`` /
``exponential`` (``k_min -> k_max`` with travel ``tau``), ``step``) and which maximizer
uses the plan (``pgd``, ``fosc``, ``fat``, or an Amata+ method ``free``, ``fast``,
``yopo``, ``atta`` with its ``maximizer_kwargs``); ``detect_overfitting: true`` adds
the FGSM check for catastrophic overfitting. Its ``choices`` field lists what the
paper leaves open and what we chose.

:func:`run_experiment` trains every run (checkpointing each epoch, so an interrupted run
resumes to the same result), evaluates the final model (clean, PGD with restarts, CW,
AutoAttack on a fixed test subset) and writes one ``amata-run/1`` JSON per run to
``OUT_DIR/<experiment>[-reduced]/<run>.json``. Overriding the training subset, the
epochs, the evaluation subset or the report's subset marks the results as *reduced*;
a finished result is never overwritten by a run with other settings.

Command line: ``python -m amata_lib experiment NAME`` (``--list``, ``--help``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch.utils.data import TensorDataset

from . import maximizers, models
from .data import DATASETS, MNIST_ENV, load
from .evaluation import robustness_report
from .results import ResultError, load_run, save_run, write_json_atomic
from .schedules import Amata, Constant, Exponential, ROUNDINGS, Schedule, Step
from .training import LR_SCHEDULES, OPTIMIZERS, select_device, train

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
METHODS = ("erm", "pgd", "constant", "amata", "exponential", "step")
TOP_FIELDS = ("name", "version", "description", "dataset", "model", "eps", "epochs", "batch_size", "optimizer",
              "lr", "lr_schedule", "momentum", "weight_decay", "seed", "eval", "runs", "choices")
EVAL_FIELDS = ("pgd_steps", "pgd_restarts", "cw_steps", "autoattack_n", "every", "subset")
METHOD_FIELDS = {"erm": (), "pgd": ("k", "alpha"), "constant": ("k", "alpha"), "amata": ("k_min", "k_max", "tau"),
                 "exponential": ("k_min", "k_max", "tau"), "step": ("stages", "tau")}
RUN_OPTIONAL = ("maximizer", "maximizer_kwargs", "rounding", "detect_overfitting")
AUTOATTACK_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
Log = Callable[[str], None]


class ConfigError(ValueError):
    """An experiment config is missing, unreadable or has a bad field (the message names it)."""


# ----------------------------------------------------------------------------- validation

def _number(field: str, value: Any, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite number ``>= minimum`` (``> minimum`` if ``strict``); ``"8/255"`` strings are read as fractions."""
    if isinstance(value, str):
        try:
            value = float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"field {field!r} must be a number or a fraction like '8/255', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < minimum or (strict and value == minimum):
        raise ConfigError(f"field {field!r} must be a finite number {'>' if strict else '>='} {minimum:g}, "
                          f"got {value!r}")
    return float(value)


def _integer(field: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"field {field!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _choice(field: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"field {field!r} must be one of {allowed}, got {value!r}")
    return value


def _name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not RUN_NAME.match(value):
        raise ConfigError(f"field {field!r} must be a file-name-safe string (letters, digits, '.', '_', '-'), "
                          f"got {value!r}")
    return value


def _fields(field: str, obj: Any, required: Iterable[str], optional: Iterable[str] = ()) -> dict:
    """``obj`` must be an object with every required key and no key outside required + optional."""
    if not isinstance(obj, dict):
        raise ConfigError(f"field {field!r} must be an object, got {obj!r:.60}")
    required = tuple(required)
    missing = [k for k in required if k not in obj]
    if missing:
        raise ConfigError(f"field {field!r} lacks {missing}")
    unknown = [k for k in obj if k not in required and k not in tuple(optional)]
    if unknown:
        raise ConfigError(f"field {field!r} has unknown keys {unknown}")
    return obj


def _validate_eval(ev: Any) -> dict:
    """``eval`` block; ``autoattack_attacks`` (optional) replaces AutoAttack's standard ensemble by a list."""
    ev = _fields("eval", ev, EVAL_FIELDS, ("autoattack_attacks",))
    out = {k: _integer(f"eval.{k}", ev[k]) for k in EVAL_FIELDS if k != "subset"}
    out["subset"] = None if ev["subset"] is None else _integer("eval.subset", ev["subset"])
    attacks = ev.get("autoattack_attacks")
    if attacks is not None and (not isinstance(attacks, list) or not attacks
                                or any(a not in AUTOATTACK_ATTACKS for a in attacks)):
        raise ConfigError(f"field 'eval.autoattack_attacks' must be null or a non-empty list of "
                          f"{AUTOATTACK_ATTACKS}, got {attacks!r}")
    out["autoattack_attacks"] = attacks
    return out


def _validate_run(i: int, run: Any) -> dict:
    where = f"runs[{i}]"
    if not isinstance(run, dict):
        raise ConfigError(f"field {where!r} must be an object, got {run!r:.60}")
    method = _choice(f"{where}.method", run.get("method"), METHODS)
    run = _fields(where, run, ("name", "method") + METHOD_FIELDS[method], RUN_OPTIONAL)
    out: dict[str, Any] = {"name": _name(f"{where}.name", run["name"]), "method": method}
    if method in ("pgd", "constant"):
        out["k"] = _integer(f"{where}.k", run["k"])
        out["alpha"] = _number(f"{where}.alpha", run["alpha"], strict=True)
    elif method in ("amata", "exponential"):
        out["k_min"] = _integer(f"{where}.k_min", run["k_min"])
        out["k_max"] = _integer(f"{where}.k_max", run["k_max"])
        if out["k_min"] > out["k_max"]:
            raise ConfigError(f"field {where + '.k_min'!r} must be <= k_max, got {out['k_min']} > {out['k_max']}")
        out["rounding"] = _choice(f"{where}.rounding", run.get("rounding", "round"), ROUNDINGS)
    elif method == "step":
        stages = run["stages"]
        if not isinstance(stages, list) or not stages:
            raise ConfigError(f"field {where + '.stages'!r} must be a non-empty list of integers, got {stages!r}")
        out["stages"] = [_integer(f"{where}.stages[{j}]", k) for j, k in enumerate(stages)]
    if "tau" in METHOD_FIELDS[method]:
        out["tau"] = _number(f"{where}.tau", run["tau"], strict=True)
    if "detect_overfitting" in run:  # only when given, so older results keep matching their config
        if not isinstance(run["detect_overfitting"], bool):
            raise ConfigError(f"field {where + '.detect_overfitting'!r} must be true or false, "
                              f"got {run['detect_overfitting']!r}")
        out["detect_overfitting"] = run["detect_overfitting"]
    if method == "erm":
        if run.get("maximizer", "clean") != "clean" or run.get("maximizer_kwargs"):
            raise ConfigError(f"field {where + '.maximizer'!r}: method 'erm' trains on clean data, "
                              f"got maximizer {run.get('maximizer')!r}")
        return out
    out["maximizer"] = _choice(f"{where}.maximizer", run.get("maximizer", "pgd"),
                               sorted(set(maximizers.MAXIMIZERS) - {"clean"}))
    kwargs = run.get("maximizer_kwargs", {})
    if not isinstance(kwargs, dict):
        raise ConfigError(f"field {where + '.maximizer_kwargs'!r} must be an object, got {kwargs!r:.60}")
    out["maximizer_kwargs"] = dict(kwargs)
    return out


def validate_config(raw: Any, source: str = "config") -> dict:
    """Check an experiment config and return it with numbers resolved (``"8/255"`` -> float).

    Raises
    ------
    ConfigError
        Naming ``source`` and the first bad field.
    """
    try:
        cfg = _fields("config", raw, TOP_FIELDS)
        out: dict[str, Any] = {
            "name": _name("name", cfg["name"]),
            "version": _integer("version", cfg["version"]),
            "description": cfg["description"],
            "dataset": _choice("dataset", cfg["dataset"], DATASETS),
            "model": _choice("model", cfg["model"], sorted(models.MODELS)),
            "eps": _number("eps", cfg["eps"]),
            "epochs": _integer("epochs", cfg["epochs"]),
            "batch_size": _integer("batch_size", cfg["batch_size"]),
            "optimizer": _choice("optimizer", cfg["optimizer"], OPTIMIZERS),
            "lr": _number("lr", cfg["lr"], strict=True),
            "lr_schedule": _choice("lr_schedule", cfg["lr_schedule"], LR_SCHEDULES),
            "momentum": _number("momentum", cfg["momentum"]),
            "weight_decay": _number("weight_decay", cfg["weight_decay"]),
            "seed": _integer("seed", cfg["seed"], minimum=0),
            "eval": _validate_eval(cfg["eval"]),
        }
        if not isinstance(cfg["description"], str):
            raise ConfigError(f"field 'description' must be a string, got {cfg['description']!r:.60}")
        choices = cfg["choices"]
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise ConfigError(f"field 'choices' must be a list of strings, got {choices!r:.60}")
        out["choices"] = list(choices)
        if not isinstance(cfg["runs"], list) or not cfg["runs"]:
            raise ConfigError(f"field 'runs' must be a non-empty list, got {cfg['runs']!r:.60}")
        out["runs"] = [_validate_run(i, r) for i, r in enumerate(cfg["runs"])]
        for i, run in enumerate(out["runs"]):
            try:
                build_run_maximizer(run, out["eps"])
            except ValueError as exc:
                raise ConfigError(f"field 'runs[{i}].maximizer_kwargs': {exc}") from None
        names = [r["name"] for r in out["runs"]]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"field 'runs' has duplicate names {duplicates}")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return out


# ----------------------------------------------------------------------------- loading

def available() -> list[str]:
    """Names of the configs shipped in ``amata_lib/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def config_path(name: str) -> Path:
    """The file of config ``name``: a shipped name, or a path to a ``.json`` file."""
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"config file {name!r} does not exist")
        return path
    if name not in available():
        raise ConfigError(f"unknown experiment {name!r}; available: {', '.join(available())}")
    return CONFIG_DIR / f"{name}.json"


def load_config(name: str) -> dict:
    """Read and validate config ``name`` (shipped name or ``.json`` path)."""
    path = config_path(name)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    return validate_config(raw, str(path))


def with_overrides(cfg: dict, *, train_subset: int | None = None, epochs: int | None = None,
                   eval_subset: int | None = None, autoattack_n: int | None = None,
                   seed: int | None = None) -> tuple[dict, dict]:
    """Config with the overrides applied, and the overrides that changed something.

    Reduced scale: ``train_subset`` keeps the first N training examples; ``epochs``
    replaces T (schedules anneal over the new T); ``eval_subset`` replaces ``eval.subset``
    and ``autoattack_n`` replaces ``eval.autoattack_n`` (the size of the final report's
    subset). Not a reduction: ``seed`` replaces the config's seed (another repetition).
    """
    for name, value in (("train_subset", train_subset), ("epochs", epochs), ("eval_subset", eval_subset),
                        ("autoattack_n", autoattack_n)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    cfg = json.loads(json.dumps(cfg))
    changed: dict[str, int] = {}
    if train_subset is not None:
        changed["train_subset"] = train_subset
    if epochs is not None and epochs != cfg["epochs"]:
        changed["epochs"] = cfg["epochs"] = epochs
    if eval_subset is not None and eval_subset != cfg["eval"]["subset"]:
        changed["eval_subset"] = cfg["eval"]["subset"] = eval_subset
    if autoattack_n is not None and autoattack_n != cfg["eval"]["autoattack_n"]:
        changed["autoattack_n"] = cfg["eval"]["autoattack_n"] = autoattack_n
    if seed is not None and seed != cfg["seed"]:
        changed["seed"] = cfg["seed"] = seed
    return cfg, changed


def is_reduced(overrides: dict) -> bool:
    """Whether the overrides change the scale (any but ``seed``)."""
    return any(key != "seed" for key in overrides)


def folder_name(cfg: dict, overrides: dict) -> str:
    """``<experiment>`` at the config's scale; ``-reduced`` with a scale override, ``-seed<N>`` with another seed."""
    return (cfg["name"] + ("-reduced" if is_reduced(overrides) else "")
            + (f"-seed{overrides['seed']}" if "seed" in overrides else ""))


# ----------------------------------------------------------------------------- one run

def build_schedule(run: dict, epochs: int) -> Schedule | None:
    """The run's per-epoch plan ``(K_t, alpha_t)``; ``None`` for ERM."""
    method = run["method"]
    if method == "erm":
        return None
    if method in ("pgd", "constant"):
        return Constant(run["k"], run["alpha"], epochs)
    if method == "amata":
        return Amata(run["k_min"], run["k_max"], run["tau"], epochs, rounding=run["rounding"])
    if method == "exponential":
        return Exponential(run["k_min"], run["k_max"], run["tau"], epochs, rounding=run["rounding"])
    return Step(run["stages"], run["tau"], epochs)


def build_run_maximizer(run: dict, eps: float):
    """The run's inner maximizer (``Clean`` for ERM) with radius ``eps``."""
    if run["method"] == "erm":
        return maximizers.build_maximizer("clean", eps)
    return maximizers.build_maximizer(run["maximizer"], eps, **run["maximizer_kwargs"])


def run_record_config(cfg: dict, run: dict, overrides: dict, source: str) -> dict:
    """What a result file stores as its config: everything that determines the run."""
    shared = {k: cfg[k] for k in TOP_FIELDS if k not in ("name", "runs")}
    return {"experiment": cfg["name"], "config_file": source, **shared, "run": run,
            "schedule": repr(build_schedule(run, cfg["epochs"])), "overrides": overrides,
            "reduced": is_reduced(overrides)}


def command_line(name: str, *, runs: list[str] | None = None, overrides: dict | None = None,
                 data_path: str | None = None, out_dir: str | Path = "data/results") -> str:
    """The CLI command that reproduces an experiment (stored in each result's provenance)."""
    args = ["python", "-m", "amata_lib", "experiment", name]
    if runs:
        args += ["--runs", ",".join(runs)]
    for key, value in (overrides or {}).items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    if data_path:
        args += ["--data-path", str(data_path)]
    if str(out_dir) != "data/results":
        args += ["--out-dir", str(out_dir)]
    return " ".join(shlex.quote(a) for a in args)


def final_report(model: torch.nn.Module, test_eval: TensorDataset, cfg: dict) -> dict:
    """Clean, PGD (with restarts), CW and AutoAttack accuracy of the finished model.

    All four on the first ``eval.autoattack_n`` examples of the evaluation subset,
    seeded by the config's seed, so a resumed run reports the same numbers.
    """
    ev = cfg["eval"]
    attacks = ev["autoattack_attacks"]
    return robustness_report(model, test_eval, eps=cfg["eps"], pgd_steps=ev["pgd_steps"],
                             pgd_restarts=ev["pgd_restarts"], cw_steps=ev["cw_steps"],
                             autoattack_n=min(ev["autoattack_n"], len(test_eval)),
                             autoattack_version="standard" if attacks is None else "custom",
                             autoattack_attacks=attacks, seed=cfg["seed"])


def data_file(dataset: str, data_path: str | None) -> dict:
    """Which file the data came from (``--data-path`` or ``$AMATA_MNIST``) and its SHA-256, if any."""
    path = data_path or (os.environ.get(MNIST_ENV) if dataset == "mnist" else None)
    if not path or not Path(path).is_file():
        return {"data_path": path, "data_sha256": None}
    return {"data_path": str(path), "data_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def _settings(config: dict) -> dict:
    """The fields of a run's config that decide its result (as JSON would store them); prose is left out."""
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k not in ("description", "choices")}


def _finished(path: Path, config: dict) -> bool:
    """Whether ``path`` holds this run already; a result made with other settings is an error."""
    if not path.exists():
        return False
    stored = load_run(path)["config"]
    differ = [k for k, v in _settings(config).items() if stored.get(k) != v]
    if differ:
        raise ConfigError(f"{path} exists but was made with other settings (fields {differ}); "
                          f"delete it or choose another --out-dir")
    return True


def _check_checkpoint_config(ckpt: Path, config: dict) -> None:
    """A checkpoint resumes only the run it was made for (its config is kept beside it)."""
    side = ckpt.with_suffix(".config.json")
    if ckpt.exists() and side.exists() and _settings(json.loads(side.read_text())) != _settings(config):
        raise ConfigError(f"checkpoint {ckpt} belongs to a run with other settings; delete it to start afresh")
    write_json_atomic(side, config)


def _epoch_line(run: str, epochs: int, log: Log) -> Callable[[dict, torch.nn.Module], None]:
    """Trainer callback that logs one line per epoch."""
    def line(rec: dict, _model: torch.nn.Module) -> None:
        acc = "" if rec["clean_acc"] is None else (
            f" clean {rec['clean_acc']:.1%} robust {rec['robust_acc']:.1%}")
        if rec.get("fgsm_acc") is not None:
            acc += f" FGSM {rec['fgsm_acc']:.1%}" + (" CATASTROPHIC OVERFITTING" if rec["catastrophic_overfitting"] else "")
        log(f"[{run}] epoch {rec['epoch']:3d}/{epochs} K={rec['steps']:<3d} loss {rec['train_loss']:.4f}"
            f"{acc} time {rec['time']:.1f}s passes {rec['passes']}")
    return line


def run_one(cfg: dict, run: dict, datasets: tuple[TensorDataset, TensorDataset], *, overrides: dict,
            source: str, out_dir: Path, checkpoint_dir: Path, device: torch.device, command: str,
            data_path: str | None = None, keep_checkpoint: bool = False, log: Log | None = print) -> Path:
    """Train, evaluate and save one run; skip it if its result exists, resume it from its checkpoint."""
    folder = folder_name(cfg, overrides)
    out = out_dir / folder / f"{run['name']}.json"
    config = run_record_config(cfg, run, overrides, source)
    if _finished(out, config):
        if log:
            log(f"[{run['name']}] done already: {out}")
        return out
    ckpt = checkpoint_dir / folder / f"{run['name']}.pt"
    _check_checkpoint_config(ckpt, config)
    if log and ckpt.exists():
        log(f"[{run['name']}] resuming from {ckpt}")
    train_set, test_set = datasets
    torch.manual_seed(cfg["seed"])
    model = models.build(cfg["model"])
    ev = cfg["eval"]
    history = train(model, train_set, test_set, epochs=cfg["epochs"], eps=cfg["eps"],
                    schedule=build_schedule(run, cfg["epochs"]), maximizer=build_run_maximizer(run, cfg["eps"]),
                    optimizer=cfg["optimizer"], lr=cfg["lr"], momentum=cfg["momentum"],
                    weight_decay=cfg["weight_decay"], lr_schedule=cfg["lr_schedule"],
                    batch_size=cfg["batch_size"], seed=cfg["seed"], device=device,
                    eval_steps=ev["pgd_steps"], eval_subset=ev["subset"], eval_every=ev["every"],
                    detect_overfitting=run.get("detect_overfitting", False), checkpoint=ckpt,
                    callback=_epoch_line(run["name"], cfg["epochs"], log) if log else None)
    test_eval = TensorDataset(*(t[:ev["subset"]] for t in test_set.tensors)) if ev["subset"] else test_set
    config.update(data_file(cfg["dataset"], data_path), train_size=len(train_set), test_size=len(test_set),
                  eval_size=len(test_eval))
    report = final_report(model, test_eval, cfg)
    save_run(out, config=config, history=history, seed=cfg["seed"], dataset=cfg["dataset"], device=device,
             command=command, report=report)
    if not keep_checkpoint:
        ckpt.unlink(missing_ok=True)
        ckpt.with_suffix(".config.json").unlink(missing_ok=True)
    if log:
        log(f"[{run['name']}] wrote {out}")
    return out


# ----------------------------------------------------------------------------- experiment

def select_runs(cfg: dict, names: list[str] | None) -> list[dict]:
    """The config's runs named in ``names`` (all when ``None``), in the config's order."""
    known = [r["name"] for r in cfg["runs"]]
    if names is None:
        return cfg["runs"]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"runs {unknown} are not in experiment {cfg['name']!r}; its runs: {', '.join(known)}")
    return [r for r in cfg["runs"] if r["name"] in names]


def run_experiment(name: str, *, runs: list[str] | None = None, train_subset: int | None = None,
                   epochs: int | None = None, eval_subset: int | None = None, autoattack_n: int | None = None,
                   seed: int | None = None, device: str = "auto",
                   data_path: str | None = None, data_root: str | Path = "data/datasets", download: bool = False,
                   out_dir: str | Path = "data/results", checkpoint_dir: str | Path = "data/checkpoints",
                   keep_checkpoints: bool = False, log: Log | None = print) -> list[Path]:
    """Run experiment ``name`` (a shipped config or a ``.json`` path); return the result files.

    Parameters
    ----------
    name : str
        Config name (see :func:`available`) or path to a config file.
    runs : list of str, optional
        Only these runs (default: all).
    train_subset, epochs, eval_subset, autoattack_n : int, optional
        Reduced-scale overrides (see :func:`with_overrides`); results then go to
        ``<experiment>-reduced`` and record them.
    seed : int, optional
        Another seed than the config's (weights, shuffling, random starts); results go
        to ``<experiment>[-reduced]-seed<N>``.
    device, data_path, data_root, download
        As for :func:`amata_lib.train` and :func:`amata_lib.load`.
    out_dir, checkpoint_dir : path
        Where results (``<out_dir>/<experiment>[-reduced]/<run>.json``) and per-epoch
        checkpoints go. Finished runs are skipped; interrupted runs resume.
    keep_checkpoints : bool
        Keep each final checkpoint (the trained weights) after its result is written.
    log : callable, optional
        Receives one line per epoch and per run (``None``: silent).
    """
    source = name if name.endswith(".json") else f"amata_lib/configs/{name}.json"
    cfg, overrides = with_overrides(load_config(name), train_subset=train_subset, epochs=epochs,
                                    eval_subset=eval_subset, autoattack_n=autoattack_n, seed=seed)
    chosen = select_runs(cfg, runs)
    dev = select_device(device)
    train_set, test_set = load(cfg["dataset"], path=data_path, root=data_root, download=download)
    if train_subset is not None:
        train_set = TensorDataset(*(t[:train_subset] for t in train_set.tensors))
    command = command_line(name, runs=runs, overrides=overrides, data_path=data_path, out_dir=out_dir)
    return [run_one(cfg, run, (train_set, test_set), overrides=overrides, source=source, out_dir=Path(out_dir),
                    checkpoint_dir=Path(checkpoint_dir), device=dev, command=command, data_path=data_path,
                    keep_checkpoint=keep_checkpoints, log=log) for run in chosen]


# ----------------------------------------------------------------------------- reading results

def load_results(folder: str | Path, cfg: dict | None = None) -> list[dict]:
    """The finished runs in a results folder, in the config's run order when ``cfg`` is given."""
    folder = Path(folder)
    found = {p.stem: load_run(p) for p in sorted(folder.glob("*.json"))}
    order = [r["name"] for r in cfg["runs"]] if cfg else sorted(found)
    return [dict(found[n], run=n) for n in order if n in found]


def summary(result: dict) -> dict:
    """One table row from a result: final clean / PGD / CW / AutoAttack accuracy, training time and passes."""
    if "report" not in result:
        raise ResultError(f"result of run {result.get('run')!r} has no final robustness report")
    last = result["history"][-1]
    rep = result["report"]
    return {"run": result.get("run", result["config"]["run"]["name"]), "clean": rep.get("clean"),
            "pgd": rep.get("pgd"), "cw": rep.get("cw"), "autoattack": rep.get("autoattack"),
            "time": last["time"], "passes": last["passes"], "epochs": last["epoch"]}
