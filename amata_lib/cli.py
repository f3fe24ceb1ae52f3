"""Command line: ``python -m amata_lib {train,schedule,show,experiment} ...`` (``--help`` on each).

A mistake the user can fix (:class:`~amata_lib.infra.errors.UserError`: a bad option, file,
config or checkpoint, a path too long for the file system) is printed as one line and
exits with status 2; anything else is a bug and keeps its traceback. A warning of the
library (:class:`~amata_lib.infra.errors.AmataWarning`) is one line ``amata_lib: warning: ...``.
Control characters of files and paths are printed escaped (``\\x1b``), never sent to the
terminal. Output into a pipe that closes (``... | head``) ends quietly with status 141, as a
program stopped by SIGPIPE.
"""
from __future__ import annotations

import argparse
import errno
import math
import os
import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import Callable

from .core.models import DEFAULT_MODEL, MODELS
from .core.optim import LR_SCHEDULES, OPTIMIZERS
from .core.schedules import ROUNDINGS
from .infra.data import AUGMENTATIONS, DATASETS
from .infra.errors import AmataWarning, UserError
from .methods import MAXIMIZERS
from .spec import AUTOATTACK_ATTACKS, MAX_EPOCHS, MAX_SEED, MAX_STEPS, METHODS

DEFAULT_EPS = {"digits": 0.2, "mnist": 0.3, "cifar10": 8 / 255}
FLAGS = {"k": "--k", "alpha": "--alpha", "k_min": "--k-min", "k_max": "--k-max", "tau": "--tau",
         "rounding": "--rounding", "stages": "--stages", "gamma": "--gamma", "probe_size": "--probe-size",
         "probe_every": "--probe-every", "monotone": "--monotone", "maximizer_kwargs": "--maximizer-arg"}


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """``text`` with every control character (escape codes, newlines, bells) written as ``\\xNN``."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback
        raise UserError(f"{message} (see '{self.prog} --help')")


def _number(minimum: float | None = None, strict: bool = False, maximum: float | None = None, kind=float):
    """An argparse type: a finite number (or integer) within bounds, named in the error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        ok = math.isfinite(value) and (minimum is None or (value > minimum if strict else value >= minimum)) \
            and (maximum is None or value <= maximum)
        if not ok:
            shown = (lambda v: str(v)) if kind is int else (lambda v: f"{v:g}")
            low = "" if minimum is None else f"{'>' if strict else '>='} {shown(minimum)}"
            high = "" if maximum is None else f"{' and ' if low else ''}<= {shown(maximum)}"
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a finite number'} "
                                             f"{low}{high}, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


COUNT = _number(minimum=1, kind=int)
POSITIVE = _number(minimum=0, strict=True)
EPOCHS = _number(minimum=1, maximum=MAX_EPOCHS, kind=int)
STEPS = _number(minimum=1, maximum=MAX_STEPS, kind=int)
SEED = _number(minimum=0, maximum=MAX_SEED, kind=int)
AT_MOST_STEPS = f"at most {MAX_STEPS:,}"
AT_MOST_EPOCHS = f"at most {MAX_EPOCHS:,}"


def _schedule_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("schedule (the inner maximization's K_t and alpha_t per epoch)")
    g.add_argument("--method", choices=METHODS, default="amata",
                   help="erm: clean training; pgd (or its synonym constant): K and alpha every epoch; amata: "
                        "linear K_min -> K_max (Algorithm 1); exponential: geometric K_min -> K_max; step: "
                        "--stages; adaptive: each epoch the K in K_min..K_max (alpha = tau / K) that maximises "
                        "Eq. 14's ||grad_theta loss||^2 - gamma K on a probe minibatch (default: amata)")
    g.add_argument("--eps", type=_number(minimum=0, maximum=1), default=None,
                   help="L-inf radius in pixel units [0, 1] (default: 0.2 digits, 0.3 mnist, 8/255 cifar10)")
    g.add_argument("--epochs", type=EPOCHS, default=30, help=f"training epochs T, at most {MAX_EPOCHS:,} (default: 30)")
    g.add_argument("--k", type=STEPS, default=None, help=f"PGD steps K for --method pgd, at most {MAX_STEPS:,} "
                                                        f"(default: 10)")
    g.add_argument("--alpha", type=POSITIVE, default=None,
                   help="PGD step size for --method pgd (default: tau / K)")
    g.add_argument("--k-min", type=STEPS, default=None,
                   help=f"K_min of amata/exponential/adaptive, {AT_MOST_STEPS} (default: 2)")
    g.add_argument("--k-max", type=STEPS, default=None,
                   help=f"K_max of amata/exponential/adaptive, at most {MAX_STEPS:,} (default: 10)")
    g.add_argument("--tau", type=POSITIVE, default=None,
                   help="total travel K_t * alpha_t (default: 2.5 * eps, Madry et al.'s rule)")
    g.add_argument("--rounding", choices=ROUNDINGS, default=None,
                   help="how amata/exponential make K_t an integer (default: round, half up)")
    g.add_argument("--stages", default=None, help="comma-separated K per stage for --method step (default: 2,5,10)")
    g.add_argument("--gamma", type=_number(minimum=0), default=None,
                   help="adaptive: price of one step in Eq. 14, V(K) = ||grad_theta loss||^2 - gamma K (default: 0)")
    g.add_argument("--probe-size", type=COUNT, default=None,
                   help="adaptive: training examples of the probe minibatch, the first N (default: 128)")
    g.add_argument("--probe-every", type=COUNT, default=None,
                   help="adaptive: choose a new plan every N epochs (default: 1)")
    g.add_argument("--monotone", action="store_const", const=True, default=None,
                   help="adaptive: never choose fewer steps than the previous choice")
    g = p.add_argument_group("inner maximizer (what uses K_t and alpha_t)")
    g.add_argument("--maximizer", choices=sorted(set(MAXIMIZERS) - {"clean"}), default=None,
                   help="pgd (default), fosc, fat, or an Amata+ method: free (K = replays m, alpha = step), "
                        "fast (FGSM from a random start, alpha = step), yopo (K = full passes m), atta "
                        "(K PGD steps from the stored perturbation)")
    g.add_argument("--maximizer-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword of the maximizer, repeatable: e.g. n=10 layer=relu1 (yopo), reset=10 "
                        "early_reset=2 early_epochs=5 (atta), weak_fraction=0.3 (fast), random_start=false (pgd)")
    g.add_argument("--detect-overfitting", action="store_true",
                   help="also measure FGSM accuracy and flag catastrophic overfitting each evaluation")
    g.add_argument("--early-stop-drop", type=_number(minimum=0, maximum=1), default=None,
                   help="Wong et al.'s early stopping: stop and roll back when PGD accuracy on the first training "
                        "minibatch drops by more than this (their 0.2); off by default")
    g.add_argument("--early-stop-steps", type=STEPS, default=5,
                   help=f"PGD steps of the early-stopping check, {AT_MOST_STEPS} (default: 5)")


def _value(text: str) -> object:
    """A ``--maximizer-arg`` value: int, float, true/false/none, or the string itself."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _flag_names(message: str) -> str:
    """A schema message with field names replaced by the options that set them."""
    for param, flag in FLAGS.items():
        message = message.replace(f"{param} is not used by method", f"{flag} is not used by --method")
    return message


def _row(a: argparse.Namespace) -> dict:
    """The command line's schedule and maximizer as a row of a table (:class:`amata_lib.spec.RowSpec`)."""
    from .spec import defaults
    names = ("k", "alpha", "k_min", "k_max", "tau", "rounding", "gamma", "probe_size", "probe_every", "monotone")
    params = {k: getattr(a, k) for k in names if getattr(a, k) is not None}
    if a.stages is not None:
        try:
            params["stages"] = [int(s) for s in a.stages.split(",")]
        except ValueError:
            raise UserError(f"--stages must be comma-separated integers, got {a.stages!r}") from None
    try:
        params = defaults(a.method, a.eps, **params)
    except UserError as exc:
        raise UserError(str(exc).replace("takes alpha, or tau", "takes --alpha, or --tau")) from None
    row: dict = {"name": "cli", "method": a.method, **params}
    if a.method != "erm" or a.maximizer is not None or a.maximizer_arg:
        kwargs = {}
        for item in a.maximizer_arg:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise UserError(f"--maximizer-arg must be KEY=VALUE, got {item!r}")
            kwargs[key.strip().replace("-", "_")] = _value(value.strip())
        row.update(maximizer=a.maximizer or "pgd", maximizer_kwargs=kwargs)
    if getattr(a, "detect_overfitting", False):
        row["detect_overfitting"] = True
    if getattr(a, "early_stop_drop", None) is not None:
        row["early_stop"] = {"drop": a.early_stop_drop, "steps": a.early_stop_steps}
    return row


def _spec(a: argparse.Namespace) -> object:
    """The run the command line describes, validated (:class:`amata_lib.spec.RunSpec`)."""
    from pydantic import ValidationError

    from .spec import RowSpec, RunSpec, spec_error
    if a.eps == 0 and a.method != "erm":
        raise UserError("--eps 0 makes adversarial training ERM; use --method erm, or give --eps > 0")
    row = _row(a)
    try:
        RowSpec.model_validate(row)
    except ValidationError as exc:
        message = spec_error(exc, lambda f: FLAGS.get(f.split(".")[-1], f"--{f.replace('_', '-')}"))
        raise UserError(_flag_names(message)) from None
    raw = {"dataset": a.dataset, "model": a.model or DEFAULT_MODEL[a.dataset], "eps": a.eps, "epochs": a.epochs,
           "batch_size": a.batch_size, "optimizer": a.optimizer, "lr": a.lr, "lr_schedule": a.lr_schedule,
           "momentum": a.momentum, "weight_decay": a.weight_decay, "seed": a.seed, "augment": a.augment,
           "train_subset": a.train_subset, "warmup": {"epochs": a.warmup} if a.warmup else None,
           "eval": {"pgd_steps": a.eval_steps, "pgd_restarts": a.eval_restarts, "cw_steps": a.cw_steps,
                    "autoattack_n": a.autoattack_n, "every": a.eval_every, "subset": a.eval_subset,
                    "autoattack_attacks": None if a.autoattack == "standard" else a.autoattack.split(",")},
           "run": row, "amp": a.amp, "channels_last": a.channels_last, "epoch_restarts": a.eval_restarts}
    try:
        spec = RunSpec.model_validate(raw)
    except ValidationError as exc:
        message = spec_error(exc, lambda f: "--" + f.split(".")[-1].replace("_", "-"))
        raise UserError(_flag_names(message)) from None
    spec.schedule()
    spec.maximizer()
    return spec


def _paths(a: argparse.Namespace, config: dict, kind: str) -> tuple[Path, Path]:
    """Result and checkpoint paths; the default name carries a digest of the settings, so they never collide."""
    from .infra.checkpoints import digest
    name = a.name or f"{a.dataset}-{kind}-seed{a.seed}-{digest(config, 8)}"
    out = Path(a.out) if a.out else Path("data/results") / f"{name}.json"
    ckpt = Path(a.checkpoint) if a.checkpoint else Path("data/checkpoints") / f"{name}.pt"
    if out.resolve() == ckpt.resolve():
        raise UserError(f"--out and --checkpoint must be different files, both are {out}")
    return out, ckpt


def _cmd_train(a: argparse.Namespace) -> int:
    from .core.training import select_device
    from .infra import distributed
    from .infra.data import default_augment, load
    from .infra.io import check_writable
    from .infra.results import ResultClash, finished_result, save_run
    from .spec import data_file, report, run

    a.eps = DEFAULT_EPS[a.dataset] if a.eps is None else a.eps
    a.augment = default_augment(a.dataset) if a.augment is None else a.augment
    if a.dataset == "digits" and (a.data_path or a.download or a.data_root):
        raise UserError("--data-path, --data-root and --download apply to mnist and cifar10; digits is bundled")
    if a.dataset == "cifar10" and a.data_path:
        raise UserError("--data-path applies to mnist (an .npz); cifar10 is read from --data-root")
    spec = _spec(a)
    device = select_device(a.device)
    distributed.init_from_env(a.device)  # under torchrun: join the process group (no-op otherwise)
    main_rank = distributed.is_main()  # only rank 0 prints, writes the JSON and removes the checkpoint
    datasets = load(a.dataset, path=a.data_path, root=a.data_root or "data/datasets", download=a.download)
    config = spec.model_dump()
    if config["augment"] == "none":  # absent, as in results written before augmentation existed
        del config["augment"]
    n_train = len(datasets[0]) if spec.train_subset is None else min(spec.train_subset, len(datasets[0]))
    config.update(schedule=repr(spec.schedule()), train_size=n_train, test_size=len(datasets[1]),
                  world_size=distributed.world_size(), data_sha256=data_file(a.dataset, a.data_path)["data_sha256"])
    kind = a.method if a.maximizer in (None, "pgd") else f"{a.method}-{a.maximizer}"
    out, ckpt = _paths(a, config, kind)
    check_writable(out, "--out")  # every rank decides alike, so none waits for another that left
    check_writable(ckpt, "--checkpoint")
    if finished_result(out, config):
        if main_rank:
            print(f"done already: {out} holds this run (delete it to train again)")
        return 0
    say = (lambda line: print(line, flush=True)) if main_rank else None
    trained = run(spec, datasets=datasets, device=device, checkpoint=ckpt, log=say, progress=a.progress)
    rep = report(spec, trained.model, trained.test_set) if a.report else None
    if rep is not None and trained.warmup is not None:
        rep["warmup"] = trained.warmup
    distributed.shutdown()
    if not main_rank:
        return 0
    command = "python -m amata_lib " + " ".join(shlex.quote(s) for s in sys.argv[1:])
    try:
        save_run(out, config=config, history=trained.history, seed=a.seed, dataset=a.dataset, device=device,
                 command=command, report=rep)
    except ResultClash as exc:  # another run finished there meanwhile: its result stays, this model too
        raise ResultClash(f"{exc}; this run's trained model is kept in {ckpt}: the same command with another "
                          f"--out (and --checkpoint {ckpt}) stores its result without training again") from None
    if not a.keep_checkpoint:
        ckpt.unlink(missing_ok=True)
    print(f"wrote {out}")
    return 0


def _cmd_schedule(a: argparse.Namespace) -> int:
    a.eps = 0.3 if a.eps is None else a.eps
    if a.method == "erm":
        raise UserError("--method erm has no inner maximization to schedule")
    if a.method == "adaptive":
        raise UserError("--method adaptive chooses each epoch's plan during training (from the model), so it has "
                        "no schedule to print; train it and read K_t in the result")
    from pydantic import ValidationError

    from .core.schedules import relative_cost
    from .spec import RowSpec, make_schedule, spec_error
    if a.eps == 0:
        raise UserError("--eps 0 leaves nothing to attack; give --eps > 0")
    try:
        row = RowSpec.model_validate(_row(a))
    except ValidationError as exc:
        message = spec_error(exc, lambda f: FLAGS.get(f.split(".")[-1], f"--{f.replace('_', '-')}"))
        raise UserError(_flag_names(message)) from None
    schedule = make_schedule(row.method, a.epochs, **row.schedule_params())
    print(f"{schedule!r}")
    print(" epoch   K_t   alpha_t  passes/batch")
    for t, p in enumerate(schedule.plans()):
        print(f"{t:6d} {p.steps:5d} {p.alpha:9.5f} {p.passes:8d}")
    print(f"cost relative to PGD-{getattr(schedule, 'k_max', schedule.max_steps)}: {relative_cost(schedule):.3f}")
    return 0


def _cmd_show(a: argparse.Namespace) -> int:
    from .infra.results import load_run
    run = load_run(a.path)
    prov = run["provenance"]
    print(printable(f"{a.path}: dataset {run['dataset']}, seed {run['seed']}, {prov['device']}, "
                    f"commit {prov['git_commit']}, {prov['created']}"))
    if prov.get("command"):
        print(printable(f"command: {prov['command']}"))
    history = run["history"]
    fgsm = any("fgsm_acc" in r for r in history)
    layer = any("layer_passes" in r for r in history)

    def pct(value: float | None) -> str:
        return "   -  " if value is None else f"{100 * value:5.1f}%"

    print(" epoch   K   time(s)   passes" + (" layer" if layer else "") + "  clean  robust"
          + ("   FGSM" if fgsm else ""))
    for r in history:
        line = f"{r['epoch']:6d} {r.get('steps') or 0:3d} {r['time']:9.1f} {r['passes']:>8}"
        line += f" {r.get('layer_passes', 0):>5}" if layer else ""
        line += f" {pct(r.get('clean_acc'))} {pct(r.get('robust_acc'))}"
        if fgsm:
            flag = "  catastrophic overfitting" if r.get("catastrophic_overfitting") else ""
            line += f" {pct(r.get('fgsm_acc'))}{flag}"
        print(line)
    return 0


def _cmd_experiment(a: argparse.Namespace) -> int:
    from .experiments import available, experiment_verdict, load_config, run_experiment
    from .study.verdict import format_verdict
    if a.list:
        for name in available():
            cfg = load_config(name)
            print(f"{name} (version {cfg['version']}): {cfg['dataset']}, {cfg['model']}, eps {cfg['eps']:.4g}, "
                  f"{cfg['epochs']} epochs; runs: {', '.join(r['name'] for r in cfg['runs'])}")
        return 0
    if a.name is None:
        raise UserError("give an experiment NAME or --list (see 'python -m amata_lib experiment --help')")
    if a.estimate:
        from .core.training import select_device
        from .estimate import estimate, format_estimate, pass_seconds
        from .infra.results import device_name
        cfg = load_config(a.name)
        dev = select_device(a.device)
        print(format_estimate(cfg, estimate(cfg, pass_seconds(cfg, dev)), f"{dev.type} ({device_name(dev)})"))
        return 0
    if a.verdict:
        from .infra.results import UNKNOWN
        from .spec import data_file
        data = data_file(load_config(a.name)["dataset"], a.data_path)["data_sha256"] if a.data_path else UNKNOWN
        print(format_verdict(experiment_verdict(a.name, train_subset=a.train_subset, epochs=a.epochs,
                                                eval_subset=a.eval_subset, autoattack_n=a.autoattack_n,
                                                out_dir=a.out_dir, data_sha256=data)))
        return 0
    runs = [r for r in a.runs.split(",") if r] if a.runs else None
    paths = run_experiment(a.name, runs=runs, train_subset=a.train_subset, epochs=a.epochs,
                           eval_subset=a.eval_subset, autoattack_n=a.autoattack_n, seed=a.seed, device=a.device,
                           data_path=a.data_path, data_root=a.data_root, download=a.download, out_dir=a.out_dir,
                           checkpoint_dir=a.checkpoint_dir, keep_checkpoints=a.keep_checkpoints,
                           allow_dirty=a.allow_dirty, log=lambda line: print(line, flush=True))
    print(f"{len(paths)} result(s) in {paths[0].parent}")
    return 0


def _train_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a model (ERM, PGD-K or an annealing schedule) and save JSON",
                       description="Train on a dataset and write the run with provenance to JSON. "
                                   "Interrupt it any time: the same command resumes from the checkpoint "
                                   "(only a checkpoint of the same settings; anything else is refused).")
    _schedule_args(t)
    g = t.add_argument_group("data and model")
    g.add_argument("--dataset", choices=DATASETS, default="digits", help="dataset (default: digits, bundled)")
    g.add_argument("--data-path", default=None, help="mnist: .npz with x_train, y_train, x_test, y_test "
                                                     "(default: $AMATA_MNIST)")
    g.add_argument("--data-root", default=None, help="folder of torchvision datasets (default: data/datasets)")
    g.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    g.add_argument("--train-subset", type=COUNT, default=None, help="use only the first N training examples")
    g.add_argument("--warmup", type=EPOCHS, default=None,
                   help=f"clean (ERM) epochs before the schedule starts, at a constant rate, {AT_MOST_EPOCHS} "
                        f"(default: none)")
    g.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                   help="training-data augmentation: crop-flip (random crop of the 4-pixel zero-padded image and "
                        "random horizontal flip, on the device) or none (default: crop-flip for cifar10, none "
                        "otherwise)")
    g.add_argument("--model", choices=sorted(MODELS), default=None,
                   help="model (default: digits_cnn, lenet for mnist, preact_resnet18 for cifar10)")
    g = t.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="outer optimiser (default: sgd)")
    g.add_argument("--lr", type=POSITIVE, default=0.05, help="learning rate (default: 0.05)")
    g.add_argument("--momentum", type=_number(minimum=0, maximum=1), default=0.9, help="SGD momentum (default: 0.9)")
    g.add_argument("--weight-decay", type=_number(minimum=0), default=5e-4, help="weight decay (default: 5e-4)")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant", help="(default: constant)")
    g.add_argument("--batch-size", type=COUNT, default=128, help="minibatch size (default: 128)")
    g.add_argument("--seed", type=SEED, default=0,
                   help="seed of init, shuffling and random starts, below 2**32 (default: 0)")
    g.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ... (default: auto)")
    g.add_argument("--amp", action="store_true",
                   help="bf16 autocast for training (CUDA, or a CPU: faster there only with avx512_bf16 or AMX; "
                        "evaluation stays fp32)")
    g.add_argument("--channels-last", action="store_true",
                   help="channels_last memory format (faster conv nets on tensor-core GPUs)")
    g = t.add_argument_group("evaluation after each epoch")
    g.add_argument("--eval-steps", type=STEPS, default=20,
                   help=f"PGD steps of the robust test, {AT_MOST_STEPS} (default: 20)")
    g.add_argument("--eval-restarts", type=COUNT, default=1,
                   help="PGD restarts, worst case kept, per epoch and in the --report (default: 1)")
    g.add_argument("--eval-subset", type=COUNT, default=None, help="test on the first N test examples only")
    g.add_argument("--eval-every", type=COUNT, default=1, help="evaluate every N epochs and at the end")
    g.add_argument("--report", action="store_true",
                   help="after training, store the final robustness report: clean, PGD, CW, AutoAttack and the "
                        "gradient-masking checks, on the evaluation subset (as every experiment does)")
    g.add_argument("--cw-steps", type=STEPS, default=20,
                   help=f"--report: steps of the CW attack, {AT_MOST_STEPS} (default: 20)")
    g.add_argument("--autoattack-n", type=COUNT, default=1000,
                   help="--report: examples of the report (the first N of the evaluation subset; default: 1000)")
    g.add_argument("--autoattack", default="standard",
                   help="--report: 'standard' AutoAttack, or comma-separated attacks of it, e.g. apgd-ce,apgd-dlr "
                        f"(any of {', '.join(AUTOATTACK_ATTACKS)})")
    g = t.add_argument_group("output")
    g.add_argument("--name", default=None, help="run name (default: DATASET-METHOD-seedSEED-DIGEST, DIGEST from "
                                                "the settings)")
    g.add_argument("--out", default=None, help="JSON path (default: data/results/NAME.json)")
    g.add_argument("--checkpoint", default=None, help="checkpoint path (default: data/checkpoints/NAME.pt)")
    g.add_argument("--keep-checkpoint", action="store_true", help="keep the checkpoint after success")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="hide the progress bar over each epoch's minibatches")
    t.set_defaults(func=_cmd_train)


def _experiment_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("experiment", help="run a named experiment config (a table of the paper)",
                       description="Run every run of a named, versioned config (amata_lib/configs/NAME.json), "
                                   "evaluate each final model and write OUT_DIR/NAME[-reduced]/seedN/RUN.json. "
                                   "Finished runs are skipped; the same command resumes an interrupted one.")
    e.add_argument("name", nargs="?", help="experiment name (see --list) or a path to a config .json")
    e.add_argument("--list", action="store_true", help="list the shipped experiments and exit")
    e.add_argument("--runs", default=None, help="comma-separated run names (default: all of the config)")
    g = e.add_argument_group("reduced scale (results go to NAME-reduced and record the overrides)")
    g.add_argument("--train-subset", type=COUNT, default=None, help="train on the first N training examples")
    g.add_argument("--epochs", type=EPOCHS, default=None,
                   help=f"train N epochs instead of the config's, {AT_MOST_EPOCHS}")
    g.add_argument("--eval-subset", type=COUNT, default=None, help="evaluate on the first N test examples")
    g.add_argument("--autoattack-n", type=COUNT, default=None,
                   help="final report (clean, PGD, CW, AutoAttack) on the first N of those")
    e.add_argument("--seed", type=SEED, default=None,
                   help="only this seed, below 2**32 (default: the config's, or every seed of its protocol)")
    e.add_argument("--estimate", action="store_true",
                   help="print the passes every row will take and the hours they take on --device (a pass of the "
                        "config's model timed there) and exit (no training)")
    e.add_argument("--verdict", action="store_true",
                   help="print the verdict of the config's protocol from the stored results and exit (no training)")
    g = e.add_argument_group("machine and files")
    g.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ... (default: auto)")
    g.add_argument("--data-path", default=None, help="mnist: .npz with x_train, y_train, x_test, y_test "
                                                     "(default: $AMATA_MNIST)")
    g.add_argument("--data-root", default="data/datasets", help="folder of torchvision datasets")
    g.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    g.add_argument("--out-dir", default="data/results", help="results folder (default: data/results)")
    g.add_argument("--checkpoint-dir", default="data/checkpoints", help="checkpoints (default: data/checkpoints)")
    g.add_argument("--keep-checkpoints", action="store_true", help="keep each trained model's final checkpoint")
    g.add_argument("--allow-dirty", action="store_true",
                   help="train an experiment that carries a verdict although amata_lib/ has uncommitted changes "
                        "(its results are marked as made by uncommitted code); refused without it")
    e.set_defaults(func=_cmd_experiment)


def _numbers(kind: type) -> Callable[[str], tuple]:
    """argparse type: a comma-separated list of numbers (``0,1,2``)."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
    return parse


def _cmd_criterion(a: argparse.Namespace) -> int:
    from .study.criterion_study import ordering_holds, run_study
    command = " ".join(["python -m amata_lib criterion", *(shlex.quote(v) for v in a.argv)])
    record = run_study(a.out, command=command, epochs=a.epochs, seeds=a.seeds, measure_every=a.measure_every,
                       gammas=a.gammas, log=lambda line: print(line, flush=True))
    for co_state in ("eq14", "strong"):
        for gamma in record["settings"]["gammas"]:
            held = ordering_holds(record, co_state=co_state, gamma=gamma)
            print(f"co-state {co_state:6s} gamma {gamma:<7g}: the paper's ordering holds in "
                  f"{sum(held.values())} of {len(held)} seeds")
    return 0


def _criterion_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("criterion", help="measure C over whole trainings of the paper's Table 1 strategies",
                       description="Train PGD-10/20/40 and Amata (5, 40), (10, 40) on digits for every seed, "
                                   "measure the exact criterion C (Eq. 14, and with a strong attack's co-state) "
                                   "at several gamma, and write one JSON file with provenance. Interrupt it "
                                   "any time: the same command resumes after the last finished training.")
    c.add_argument("--out", default="data/criterion/digits-table1.json", help="result file (JSON)")
    c.add_argument("--epochs", type=_number(minimum=1, kind=int), default=30, help="epochs (default: 30)")
    c.add_argument("--seeds", type=_numbers(int), default=(0, 1, 2), help="seeds (default: 0,1,2)")
    c.add_argument("--measure-every", type=_number(minimum=1, kind=int), default=10,
                   help="measure C after every N-th epoch (default: 10)")
    c.add_argument("--gammas", type=_numbers(float), default=(0.0, 1e-4, 1e-3, 0.04),
                   help="prices per inner step (default: 0,1e-4,1e-3,0.04)")
    c.set_defaults(func=_cmd_criterion)


def build_parser() -> argparse.ArgumentParser:
    """The ``amata_lib`` argument parser."""
    p = _Parser(prog="python -m amata_lib",
                description="Adversarial training accelerated by annealing (Amata, Ye et al. AAAI 2021).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _train_parser(sub)
    s = sub.add_parser("schedule", help="print a schedule's K_t, alpha_t and cost relative to PGD-K_max",
                       description="Print the plan of every epoch and the schedule's relative cost.")
    _schedule_args(s)
    s.set_defaults(func=_cmd_schedule)
    w = sub.add_parser("show", help="summarise a saved run (JSON)", description="Print a saved run's history.")
    w.add_argument("path", help="a JSON file written by 'train'")
    w.set_defaults(func=_cmd_show)
    _experiment_parser(sub)
    _criterion_parser(sub)
    return p


def preload() -> None:
    """Import the libraries every command needs (torch, scikit-learn's data sets, pydantic): see ``__main__``."""
    import pydantic  # noqa: F401
    import sklearn.datasets  # noqa: F401
    import torch  # noqa: F401


def _warning_line(message, category, filename, lineno, file=None, line=None, *, shown=warnings.showwarning):
    """The library's warnings as one line on stderr; any other warning as Python shows it."""
    if issubclass(category, AmataWarning):
        print(f"amata_lib: warning: {printable(message)}", file=sys.stderr, flush=True)
    else:
        shown(message, category, filename, lineno, file, line)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail again on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (captured output)
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point; user mistakes print one line to stderr and return 2, bugs keep their traceback."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", AmataWarning)
            warnings.showwarning = _warning_line
            args = build_parser().parse_args(argv)
            args.argv = list(sys.argv[2:] if argv is None else argv[1:])
            return args.func(args)
    except UserError as exc:
        print(f"amata_lib: error: {printable(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (``schedule | head``): stop without a word
        _quiet_stdout()
        return 141
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        name = str(exc.filename or "")
        shown = name if len(name) <= 80 else f"{name[:60]}...{name[-12:]} ({len(name)} characters)"
        print(f"amata_lib: error: path {printable(shown)} is too long for the file system ({exc.strerror}); "
              f"choose a shorter one", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("amata_lib: interrupted; run the same command again to resume from the checkpoint", file=sys.stderr)
        return 130
