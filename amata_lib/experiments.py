"""Named, versioned experiments: a JSON config per table of the paper, run by name, results kept.

A config (``amata_lib/configs/NAME.json``) fixes the dataset, model, threat model
``eps``, the outer optimiser and a list of *runs* -- one per row of a table. Each run
says how the inner maximization is scheduled (``method``: ``erm``, ``pgd`` or its
synonym ``constant`` (the plan ``K = k``, step ``alpha`` every epoch), ``amata`` /
``exponential`` (``k_min -> k_max`` with travel ``tau``), ``step``) and which maximizer
uses the plan (``pgd``, ``fosc``, ``fat``, or an Amata+ method ``free``, ``fast``,
``yopo``, ``atta`` with its ``maximizer_kwargs``); ``detect_overfitting: true`` adds
the FGSM check for catastrophic overfitting, ``lr_schedule`` gives the run its own
learning-rate schedule (e.g. ``cyclic`` for Fast), ``early_stop: {drop, steps}`` adds
Wong et al.'s early stopping with rollback on the first training minibatch.
``augment`` (``crop-flip`` or ``none``) is the training-data augmentation, by default
``crop-flip`` for cifar10 and ``none`` otherwise (:func:`~amata_lib.infra.data.default_augment`).
Its ``choices`` field lists what the paper leaves open and what we chose.

:func:`run_experiment` trains every run (checkpointing each epoch, so an interrupted run
resumes to the same result), evaluates the final model (clean, PGD with restarts, CW,
AutoAttack on a fixed test subset) and writes one ``amata-run/1`` JSON per run to
``OUT_DIR/<experiment>[-reduced]/seed<N>/<run>.json``. Overriding the training subset, the
epochs, the evaluation subset or the report's subset marks the results as *reduced*;
a finished result is never overwritten by a run with other settings.

Command line: ``python -m amata_lib experiment NAME`` (``--list``, ``--help``).
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Callable

import torch
from pydantic import Field, ValidationError, model_validator
from torch.utils.data import TensorDataset

from .core.history import overfitting_epochs
from .core.maximizers import Maximizer
from .core.schedules import Schedule
from .core.training import select_device
from .infra.checkpoints import differences
from .infra.checks import check_bool, check_strict_int
from .infra.data import default_augment, load, subset
from .infra.errors import UserError
from .infra.io import check_writable, read_json
from .infra.results import UNKNOWN, ResultClash, ResultError, check_data, finished_result, library_state, save_run
from .methods import build_maximizer
from .spec import (
    MAX_EPOCHS,
    MAX_SEED,
    METHOD_PARAMS,
    Count,
    Name,
    RowSpec,
    RunSpec,
    Settings,
    Strict,
    data_file,
    make_schedule,
    spec_error,
)
from .spec import report as final_report
from .spec import run as spec_run
from .study.verdict import ProtocolSpec, collect, format_verdict, verdict

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PROSE_FIELDS = ("description", "choices")
# Not compared when a finished result is looked up: prose, and the protocol, which decides how results
# are judged, not what a run computes (a seed's AutoAttack version, the one exception, is in its report).
NOT_RUN_SETTINGS = (*PROSE_FIELDS, "protocol", "borrow")
# Settings that must agree between an experiment and the one it borrows rows from (all but these).
NOT_SHARED = ("name", "version", "runs", *NOT_RUN_SETTINGS)
# Where the data file lies is no setting (its hash is); compared again when a result is written.
NOT_COMPARED_AT_WRITE = (*NOT_RUN_SETTINGS, "data_path")
HINT = "delete it, or choose another --out-dir"
Log = Callable[[str], None]


class ConfigError(UserError):
    """An experiment config is missing, unreadable or has a bad field (the message names it)."""


# ----------------------------------------------------------------------------- schema

class BorrowSpec(Strict):
    """Rows read from another experiment's stored results (the same settings, so the same runs).

    ``experiment`` is a shipped name or a path to a ``.json`` config, as on the command line.
    """

    experiment: Annotated[str, Field(min_length=1)]
    runs: Annotated[list[Name], Field(min_length=1)]


class ExperimentSpec(Settings):
    """A named, versioned experiment: the settings every row shares (:class:`~amata_lib.spec.Settings`) and the
    rows of one table (:class:`~amata_lib.spec.RowSpec`), with an optional verdict protocol and borrowed rows."""

    name: Name
    version: Count
    description: str
    runs: Annotated[list[RowSpec], Field(min_length=1)]
    protocol: ProtocolSpec | None = None
    borrow: BorrowSpec | None = None
    choices: list[str]

    @model_validator(mode="after")
    def _protocol_fits(self) -> ExperimentSpec:
        borrowed = self.borrow.runs if self.borrow else []
        clash = sorted({r.name for r in self.runs} & set(borrowed))
        if clash:
            raise ValueError(f"runs {clash} are both borrowed and run here")
        if self.protocol is None:
            return self
        names = [r.name for r in self.runs] + borrowed
        unknown = [n for n in [self.protocol.reference, *self.protocol.compare] if n not in names]
        if unknown:
            raise ValueError(f"protocol names runs {unknown} that are not in runs or borrow.runs {names}")
        if self.seed != self.protocol.seeds[0]:
            raise ValueError(f"seed must be the protocol's first seed {self.protocol.seeds[0]}, got {self.seed}")
        return self


def validate_config(raw: Any, source: str = "config") -> dict:
    """Check an experiment config and return it as a plain dict with numbers resolved (``"8/255"`` -> float).

    Raises
    ------
    ConfigError
        Naming ``source`` and the first bad field.
    """
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {spec_error(exc)}") from None
    # Fields added later are stored only when given, so results written before them keep matching.
    out = spec.model_dump(exclude={"runs", "augment", "train_subset", "warmup", "protocol", "borrow"})
    for key in ("train_subset", "warmup", "protocol", "borrow"):
        if getattr(spec, key) is not None:
            out[key] = getattr(spec, key).model_dump() if key != "train_subset" else spec.train_subset
    augment = spec.augment or default_augment(spec.dataset)
    if augment != "none":  # only then, so results written before augmentation existed keep matching
        out["augment"] = augment
    out["runs"] = [r.as_dict() for r in spec.runs]
    names = [r["name"] for r in out["runs"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{source}: field 'runs' has duplicate names {duplicates}")
    for i, run in enumerate(out["runs"]):
        try:
            build_schedule(run, out["epochs"])
            build_run_maximizer(run, out["eps"])
        except UserError as exc:
            raise ConfigError(f"{source}: field 'runs[{i}].maximizer_kwargs': {exc}") from None
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


def config_source(name: str) -> str:
    """How results record config ``name``: ``amata_lib/configs/NAME.json`` for a shipped one, else the path."""
    return name if name.endswith(".json") else f"amata_lib/configs/{name}.json"


def _read_config(name: str) -> tuple[dict, Path]:
    """Config ``name`` validated, its ``borrow`` not followed; and its file."""
    path = config_path(name)
    return validate_config(read_json(path, ConfigError), str(path)), path


def load_config(name: str) -> dict:
    """Read and validate config ``name`` (shipped name or ``.json`` path), and the config it borrows from."""
    cfg, path = _read_config(name)
    if "borrow" in cfg:
        lender(cfg, str(path))
    return cfg


def lender(cfg: dict, source: str = "config") -> dict:
    """The config that ``cfg`` borrows rows from, checked: the same shared settings, the rows it names.

    A borrowed row is the lender's stored result (trained there by :func:`run_experiment` if missing),
    so everything a run computes must agree: every shared setting except the names, versions, prose
    and protocol, and the protocol's AutoAttack seeds (they decide each seed's report).

    Raises
    ------
    ConfigError
        Naming ``source``, the lender and the first setting that differs.
    """
    other_name = cfg["borrow"]["experiment"]
    where = f"{source}: field 'borrow'"
    other, other_path = _read_config(other_name)  # its own borrow is refused below, never followed
    try:
        itself = Path(source).resolve() == other_path.resolve()
    except OSError:
        itself = False
    if itself:
        raise ConfigError(f"{where}: {other_name!r} is this config, which borrows from itself; borrow from the "
                          f"experiment that runs the rows")
    if "borrow" in other:
        raise ConfigError(f"{where}: {other_name!r} borrows rows itself; borrow from the experiment that runs them")
    known = [r["name"] for r in other["runs"]]
    missing = [n for n in cfg["borrow"]["runs"] if n not in known]
    if missing:
        raise ConfigError(f"{where}: {other_name!r} has no runs {missing}; its runs: {', '.join(known)}")
    mine, theirs = ({k: v for k, v in c.items() if k not in NOT_SHARED} for c in (cfg, other))
    diff = differences(theirs, mine)
    seeds = [c.get("protocol", {}).get("autoattack_standard_seeds", []) for c in (cfg, other)]
    if seeds[0] != seeds[1]:
        diff.append(f"protocol.autoattack_standard_seeds: {seeds[1]} != {seeds[0]}")
    if diff:
        raise ConfigError(f"{where}: {other_name!r} has other settings ({'; '.join(diff[:4])}), so its rows "
                          f"are not this experiment's")
    return other


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
        if value is not None:
            check_strict_int(name, value)
    if epochs is not None and epochs > MAX_EPOCHS:
        raise UserError(f"epochs must be <= {MAX_EPOCHS}, got {epochs}")
    if seed is not None and check_strict_int("seed", seed, minimum=0) > MAX_SEED:
        raise UserError(f"seed must be <= {MAX_SEED} (below 2**32), got {seed}")
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
    """The experiment's results folder: ``<experiment>``, or ``<experiment>-reduced`` with a scale override."""
    return cfg["name"] + ("-reduced" if is_reduced(overrides) else "")


def seed_folder(root: str | Path, cfg: dict, overrides: dict) -> Path:
    """Where one seed of an experiment lives: ``root/<experiment>[-reduced]/seed<N>`` (``N`` = the config's seed)."""
    return Path(root) / folder_name(cfg, overrides) / f"seed{cfg['seed']}"


def check_layout(root: str | Path, cfg: dict, overrides: dict) -> None:
    """Refuse results stored in the layout before version 0.3 (``<experiment>/<run>.json``, ``<experiment>-seedN/``).

    Raises
    ------
    ResultError
        Naming the old folder, the new place and the script that moves it.
    """
    folder = Path(root) / folder_name(cfg, overrides)
    old = [folder] if any(folder.glob("*.json")) else []
    old += sorted(p for p in Path(root).glob(f"{folder.name}-seed*") if p.is_dir())
    if old:
        raise ResultError(f"{old[0]} is in the old results layout; results now live in {folder}/seed<N>/<run>.json: "
                          f"move them with 'python scripts/migrate_results.py {root}'")


# ----------------------------------------------------------------------------- one run

def row_spec(cfg: dict, run: dict, train_subset: int | None = None) -> RunSpec:
    """The :class:`~amata_lib.spec.RunSpec` of one row of config ``cfg`` (``train_subset``: a reduced scale's)."""
    shared = {k: cfg[k] for k in Settings.model_fields if k in cfg}
    shared["augment"] = cfg.get("augment", "none")
    if train_subset is not None:
        shared["train_subset"] = train_subset
    return RunSpec.model_validate({**shared, "run": run})


def build_schedule(run: dict, epochs: int) -> Schedule | None:
    """A config row's per-epoch plan ``(K_t, alpha_t)``; ``None`` for ERM."""
    return make_schedule(run["method"], epochs, **{p: run[p] for p in METHOD_PARAMS[run["method"]] if p in run})


def build_run_maximizer(run: dict, eps: float) -> Maximizer:
    """A config row's inner maximizer (``Clean`` for ERM) with radius ``eps``."""
    if run["method"] == "erm":
        return build_maximizer("clean", eps)
    return build_maximizer(run["maximizer"], eps, **run["maximizer_kwargs"])


def run_record_config(cfg: dict, run: dict, overrides: dict, source: str) -> dict:
    """What a result file stores as its config: everything that determines the run."""
    shared = {k: v for k, v in cfg.items() if k not in ("name", "runs")}
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


def run_paths(cfg: dict, run: dict, overrides: dict, out_dir: str | Path,
              checkpoint_dir: str | Path) -> tuple[Path, Path]:
    """Where one row's result and checkpoint go."""
    return (seed_folder(out_dir, cfg, overrides) / f"{run['name']}.json",
            seed_folder(checkpoint_dir, cfg, overrides) / f"{run['name']}.pt")


def run_one(cfg: dict, run: dict, datasets: tuple[TensorDataset, TensorDataset], *, overrides: dict,
            source: str, out_dir: Path, checkpoint_dir: Path, device: torch.device, command: str,
            data_path: str | None = None, keep_checkpoint: bool = False, log: Log | None = print) -> Path:
    """Train, evaluate and save one run; skip it if its result exists, resume it from its checkpoint.

    The result is written only if its file holds no run of other settings when it is written
    (:func:`~amata_lib.infra.results.save_run`); otherwise the trained model stays in its checkpoint.
    """
    out, ckpt = run_paths(cfg, run, overrides, out_dir, checkpoint_dir)
    config = run_record_config(cfg, run, overrides, source)
    config["data_sha256"] = data_file(cfg["dataset"], data_path)["data_sha256"]
    if finished_result(out, config, ignore=NOT_RUN_SETTINGS, hint=HINT):
        if log:
            log(f"[{run['name']}] done already: {out}")
        return out
    spec = row_spec(cfg, run, overrides.get("train_subset"))
    trained = spec_run(spec, datasets=datasets, device=device, checkpoint=ckpt, log=log)
    model, history, warmup, test_set = trained.model, trained.history, trained.warmup, trained.test_set
    train_set, ev = trained.train_set, cfg["eval"]
    config.update(data_file(cfg["dataset"], data_path), train_size=len(train_set), test_size=len(test_set),
                  eval_size=len(subset(test_set, ev["subset"])))
    standard = cfg["seed"] in cfg.get("protocol", {}).get("autoattack_standard_seeds", [])
    report = final_report(spec, model, test_set, standard_autoattack=standard)
    if log and report["gradient_masking_suspect"]:
        log(f"[{run['name']}] WARNING: gradient masking suspected: {'; '.join(report['masking_reasons'])}")
    if warmup is not None:
        report["warmup"] = warmup
    try:
        save_run(out, config=config, history=history, seed=cfg["seed"], dataset=cfg["dataset"], device=device,
                 command=command, report=report, ignore=NOT_COMPARED_AT_WRITE)
    except ResultClash as exc:  # another run finished there meanwhile
        raise ResultClash(f"{exc}; this run's trained model is kept in {ckpt}: the same command with another "
                          f"--out-dir stores its result without training again") from None
    if not keep_checkpoint:
        ckpt.unlink(missing_ok=True)
    if log:
        log(f"[{run['name']}] wrote {out}")
    return out


# ----------------------------------------------------------------------------- experiment

def select_runs(cfg: dict, names: list[str] | None) -> list[dict]:
    """The config's runs named in ``names`` (all when ``None``), in the config's order."""
    known = [r["name"] for r in cfg["runs"]] + cfg.get("borrow", {}).get("runs", [])
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise ConfigError(f"runs {unknown} are not in experiment {cfg['name']!r}; its runs: {', '.join(known)}")
    return [r for r in cfg["runs"] if names is None or r["name"] in names]


def borrowed_runs(cfg: dict, names: list[str] | None) -> list[str]:
    """The rows of ``cfg``'s ``borrow`` named in ``names`` (all when ``None``)."""
    return [n for n in cfg.get("borrow", {}).get("runs", []) if names is None or n in names]


def run_experiment(name: str, *, runs: list[str] | None = None, train_subset: int | None = None,
                   epochs: int | None = None, eval_subset: int | None = None, autoattack_n: int | None = None,
                   seed: int | None = None, device: str = "auto",
                   data_path: str | None = None, data_root: str | Path = "data/datasets", download: bool = False,
                   out_dir: str | Path = "data/results", checkpoint_dir: str | Path = "data/checkpoints",
                   keep_checkpoints: bool = False, allow_dirty: bool = False,
                   log: Log | None = print) -> list[Path]:
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
        Only this seed (weights, shuffling, random starts). Default: the config's seed,
        or every seed of its ``protocol``, after which the verdict is logged.
    device, data_path, data_root, download
        As for :func:`amata_lib.train` and :func:`amata_lib.load`.
    out_dir, checkpoint_dir : path
        Where results (``<out_dir>/<experiment>[-reduced]/seed<N>/<run>.json``) and per-epoch
        checkpoints (the same layout, ``.pt``) go. Finished runs are skipped; interrupted runs resume.
    keep_checkpoints : bool
        Keep each final checkpoint (the trained weights) after its result is written.
    allow_dirty : bool
        Let an experiment with a verdict protocol (or one that lends it rows) train from a
        library with uncommitted changes under ``amata_lib/``; its results then record
        ``library_dirty: true`` and every verdict table marks them. Refused by default.
    log : callable, optional
        Receives one line per epoch and per run (``None``: silent).
    """
    source = config_source(name)
    base = load_config(name)
    if ("protocol" in base or "borrow" in base) and not check_bool("allow_dirty", allow_dirty):
        state = library_state()
        if state["library_dirty"]:
            raise UserError(f"experiment {base['name']!r} carries a verdict, and amata_lib/ has uncommitted changes "
                            f"(commit {state['git_commit'][:12]}): commit them first, or pass --allow-dirty to "
                            f"mark its results as made by uncommitted code")
    seeds = [seed] if seed is not None else base.get("protocol", {}).get("seeds", [base["seed"]])
    dev = select_device(device)
    datasets = load(base["dataset"], path=data_path, root=data_root, download=download)
    other_base = lender(base, source) if "borrow" in base else None  # checked once, used for every seed
    plan = []  # per seed: (seed, jobs, borrowed rows, overrides); every path is checked before any training
    for s in seeds:
        cfg, overrides = with_overrides(base, train_subset=train_subset, epochs=epochs, eval_subset=eval_subset,
                                        autoattack_n=autoattack_n, seed=s)
        chosen = select_runs(cfg, runs)
        check_layout(out_dir, cfg, overrides)
        command = command_line(name, runs=runs, overrides=overrides, data_path=data_path, out_dir=out_dir)
        jobs = [(cfg, run, source, command) for run in chosen]
        lent = borrowed_runs(cfg, runs)
        if lent:  # trained under the lender's name, into its folders, if they are not stored yet
            other_name = base["borrow"]["experiment"]
            other, _ = with_overrides(other_base, train_subset=train_subset, epochs=epochs,
                                      eval_subset=eval_subset, autoattack_n=autoattack_n, seed=s)
            other_command = command_line(other_name, runs=lent, overrides=overrides, data_path=data_path,
                                         out_dir=out_dir)
            jobs += [(other, run, config_source(other_name), other_command) for run in other["runs"]
                     if run["name"] in lent]
        plan.append((s, jobs, lent, overrides))
    for _, jobs, _, overrides in plan:
        for c, run, _, _ in jobs:
            out, ckpt = run_paths(c, run, overrides, out_dir, checkpoint_dir)
            if not _exists(out):  # a stored result is skipped, or refused, by run_one
                check_writable(out, f"--out-dir {out_dir}: result")
                check_writable(ckpt, f"--checkpoint-dir {checkpoint_dir}: checkpoint")
    paths = []
    for s, jobs, lent, overrides in plan:
        if log and len(seeds) > 1:
            log(f"seed {s} ({seeds.index(s) + 1} of {len(seeds)})")
        if log and lent:
            log(f"rows {', '.join(lent)}: borrowed from experiment {base['borrow']['experiment']!r}")
        paths += [run_one(c, run, datasets, overrides=overrides, source=src, out_dir=Path(out_dir),
                          checkpoint_dir=Path(checkpoint_dir), device=dev, command=cmd, data_path=data_path,
                          keep_checkpoint=keep_checkpoints, log=log) for c, run, src, cmd in jobs]
    if log and "protocol" in base and seed is None and runs is None:
        log(format_verdict(experiment_verdict(name, train_subset=train_subset, epochs=epochs,
                                              eval_subset=eval_subset, autoattack_n=autoattack_n, out_dir=out_dir,
                                              data_sha256=data_file(base["dataset"], data_path)["data_sha256"])))
    return paths


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; a path the system cannot even look up (too long) does not."""
    try:
        return path.exists()
    except OSError:
        return False


def expected_data(cfg: dict, data_sha256: Any = UNKNOWN) -> Any:
    """The data hash an experiment's results must hold: ``data_sha256`` when given, ``None`` for digits (bundled,
    no file), else ``UNKNOWN`` (of :mod:`amata_lib.infra.results`) (then all its results must hold the same one)."""
    if data_sha256 is not UNKNOWN:
        return data_sha256
    return None if cfg["dataset"] == "digits" else UNKNOWN


def check_same_data(results: dict[Path, dict], expected: Any = UNKNOWN) -> None:
    """Refuse a result (``results[path]``) trained on other data than ``expected``, or, when that is
    ``UNKNOWN`` (of :mod:`amata_lib.infra.results`), than the first of them."""
    first = None
    for path, result in results.items():
        if expected is UNKNOWN:
            first, expected = path, result["config"].get("data_sha256")
            continue
        check_data(result, expected, str(path) if first is None else f"{path} (unlike {first.name})")


def experiment_runs(name: str, *, train_subset: int | None = None, epochs: int | None = None,
                    eval_subset: int | None = None, autoattack_n: int | None = None,
                    out_dir: str | Path = "data/results", data_sha256: Any = UNKNOWN) -> dict[int, dict[str, dict]]:
    """The stored results of every seed of experiment ``name``'s protocol: ``runs[seed][row]``.

    The overrides select the reduced-scale results the same way :func:`run_experiment` stored them.
    Each file must be sane and in its place (:func:`~amata_lib.study.verdict.collect`), and
    every result trained on the same data: ``data_sha256`` when the caller knows it, else as
    :func:`expected_data` says (:func:`check_same_data`).
    """
    base = load_config(name)
    if "protocol" not in base:
        raise ConfigError(f"experiment {base['name']!r} has no protocol, so it carries no verdict")
    other = lender(base) if "borrow" in base else None
    found, places = {}, {}
    for s in base["protocol"]["seeds"]:
        kwargs = dict(train_subset=train_subset, epochs=epochs, eval_subset=eval_subset,
                      autoattack_n=autoattack_n, seed=s)
        cfg, overrides = with_overrides(base, **kwargs)
        check_layout(out_dir, cfg, overrides)
        found[s] = collect(seed_folder(out_dir, cfg, overrides), experiment=cfg["name"], seed=s)
        places.update({seed_folder(out_dir, cfg, overrides) / f"{n}.json": r for n, r in found[s].items()})
        if other is None:
            continue
        lent = base["borrow"]["runs"]
        clash = sorted(set(found[s]) & set(lent))
        if clash:
            raise ResultError(f"{seed_folder(out_dir, cfg, overrides)} holds rows {clash} that experiment "
                              f"{base['name']!r} borrows from {other['name']!r}; delete them")
        theirs, their_overrides = with_overrides(other, **kwargs)
        check_layout(out_dir, theirs, their_overrides)
        stored = collect(seed_folder(out_dir, theirs, their_overrides), experiment=theirs["name"], seed=s)
        found[s].update({n: stored[n] for n in lent if n in stored})
        places.update({seed_folder(out_dir, theirs, their_overrides) / f"{n}.json": stored[n]
                       for n in lent if n in stored})
    check_same_data(places, expected_data(base, data_sha256))
    return found


def experiment_verdict(name: str, **kwargs: Any) -> dict:
    """The verdict of experiment ``name``'s protocol on its stored results (:func:`amata_lib.study.verdict.verdict`).

    ``kwargs`` are those of :func:`experiment_runs` (overrides and ``out_dir``).
    """
    runs = experiment_runs(name, **kwargs)  # refuses a config without a protocol
    return verdict(load_config(name)["protocol"], runs)


# ----------------------------------------------------------------------------- reading results

def load_results(folder: str | Path, cfg: dict | None = None, *, data_sha256: Any = UNKNOWN) -> list[dict]:
    """The finished runs in a results folder, in the config's run order when ``cfg`` is given.

    As for a verdict, each file must be sane and hold the run its place says
    (:func:`~amata_lib.study.verdict.collect`: its run name, the experiment ``cfg`` names, the
    seed of a ``seed<N>`` folder), and all must be trained on the same data (:func:`check_same_data`).
    """
    folder = Path(folder)
    seed = re.fullmatch(r"seed(\d+)", folder.name)
    found = collect(folder, experiment=cfg["name"] if cfg else None, seed=int(seed.group(1)) if seed else None)
    check_same_data({folder / f"{n}.json": r for n, r in found.items()},
                    expected_data(cfg, data_sha256) if cfg else data_sha256)
    order = [r["name"] for r in cfg["runs"]] if cfg else sorted(found)
    return [found[n] for n in order if n in found]


def summary(result: dict) -> dict:
    """One table row from a result: final clean / PGD / CW / AutoAttack accuracy, training time and passes."""
    if "report" not in result:
        raise ResultError(f"result of run {result.get('run')!r} has no final robustness report")
    last = result["history"][-1]
    rep = result["report"]
    name = result["run"] if "run" in result else result["config"]["run"]["name"]
    return {"run": name, "clean": rep.get("clean"),
            "pgd": rep.get("pgd"), "cw": rep.get("cw"), "autoattack": rep.get("autoattack"),
            "time": last["time"], "passes": last["passes"], "epochs": last["epoch"]}


def report_table(results: dict[str, dict], *, attack: str = "PGD", cw: str = "CW", aa: str = "AA") -> str:
    """The final reports of stored runs as a table: clean, PGD, CW, AutoAttack, passes, catastrophic overfitting.

    ``results[name]`` are stored results; the column labels name the attacks as the
    config ran them (e.g. ``attack="PGD-20"``). The last column gives the first epoch
    :func:`~amata_lib.core.history.overfitting_epochs` flags ("-" for runs without the FGSM
    check) and notes an early stop with rollback (Fast's). A run whose report is suspect of
    gradient masking (``gradient_masking_suspect``, see
    :func:`~amata_lib.core.evaluation.masking_reasons`) ends its line with
    ``! gradient masking suspected``: its robust accuracies may be too high.
    """
    lines = [f"{'run':16s} {'clean':>6s} {attack:>7s} {cw:>6s} {aa:>6s}  {'passes':>6s}  catastrophic overfitting"]
    for res in results.values():
        r = summary(res)
        flagged = overfitting_epochs(res["history"])
        co = "-" if flagged is None else (f"from epoch {flagged[0]}" if flagged else "no")
        if res["history"][-1].get("rolled_back"):
            co += f"; stopped at epoch {res['history'][-1]['epoch']}, rolled back"
        pct = [f"{v:{w}.1%}" if v is not None else f"{'n/a':>{w}s}"
               for v, w in ((r["clean"], 6), (r["pgd"], 7), (r["cw"], 6), (r["autoattack"], 6))]
        mark = "  ! gradient masking suspected" if res["report"].get("gradient_masking_suspect") else ""
        lines.append(f"{r['run']:16s} {' '.join(pct)}  {r['passes']:6.0f}  {co}{mark}")
    return "\n".join(lines)

