"""Command line: ``python -m amata_lib {train,schedule,show,experiment} ...`` (``--help`` on each)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from . import distributed, models
from .maximizers import MAXIMIZERS, build_maximizer
from .data import DATASETS, DatasetUnavailable, load
from .experiments import available, load_config, run_experiment
from .results import ResultError, load_run, save_run
from .schedules import ROUNDINGS, Amata, Constant, Exponential, Schedule, Step, relative_cost
from .training import LR_SCHEDULES, OPTIMIZERS, select_device, seed_everything, train

METHODS = ("erm", "pgd", "constant", "amata", "exponential", "step")


class UserError(Exception):
    """A mistake in the command line: reported in one line, no traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback
        raise UserError(f"{message} (see '{self.prog} --help')")


def _schedule_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("schedule (the inner maximization's K_t and alpha_t per epoch)")
    g.add_argument("--method", choices=METHODS, default="amata",
                   help="erm: clean training; pgd (or its synonym constant): K and alpha every epoch; amata: "
                        "linear K_min -> K_max (Algorithm 1); exponential: geometric K_min -> K_max; step: "
                        "--stages (default: amata)")
    g.add_argument("--eps", type=float, default=None,
                   help="L-inf radius in pixel units [0, 1] (default: 0.2 digits, 0.3 mnist, 8/255 cifar10)")
    g.add_argument("--epochs", type=int, default=30, help="training epochs T (default: 30)")
    g.add_argument("--k", type=int, default=10, help="PGD steps K for --method pgd (default: 10)")
    g.add_argument("--alpha", type=float, default=None, help="PGD step size for --method pgd (default: tau / K)")
    g.add_argument("--k-min", type=int, default=2, help="K_min of amata/exponential (default: 2)")
    g.add_argument("--k-max", type=int, default=10, help="K_max of amata/exponential (default: 10)")
    g.add_argument("--tau", type=float, default=None,
                   help="total travel K_t * alpha_t (default: 2.5 * eps, Madry et al.'s rule)")
    g.add_argument("--rounding", choices=ROUNDINGS, default="round",
                   help="how K_t is made an integer (default: round, half up)")
    g.add_argument("--stages", default="2,5,10", help="comma-separated K per stage for --method step")
    g = p.add_argument_group("inner maximizer (what uses K_t and alpha_t)")
    g.add_argument("--maximizer", choices=sorted(set(MAXIMIZERS) - {"clean"}), default="pgd",
                   help="pgd (default), fosc, fat, or an Amata+ method: free (K = replays m, alpha = step), "
                        "fast (FGSM from a random start, alpha = step), yopo (K = full passes m), atta "
                        "(K PGD steps from the stored perturbation)")
    g.add_argument("--maximizer-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword of the maximizer, repeatable: e.g. n=10 layer=relu1 (yopo), reset=10 "
                        "early_reset=2 early_epochs=5 (atta), weak_fraction=0.3 (fast)")
    g.add_argument("--detect-overfitting", action="store_true",
                   help="also measure FGSM accuracy and flag catastrophic overfitting each evaluation")


def _build_schedule(a: argparse.Namespace) -> Schedule | None:
    if a.method == "erm":
        return None
    tau = a.tau if a.tau is not None else 2.5 * a.eps
    if a.method in ("pgd", "constant"):
        alpha = a.alpha if a.alpha is not None else tau / a.k
        return Constant(a.k, alpha, a.epochs)
    if a.method == "amata":
        return Amata(a.k_min, a.k_max, tau, a.epochs, rounding=a.rounding)
    if a.method == "exponential":
        return Exponential(a.k_min, a.k_max, tau, a.epochs, rounding=a.rounding)
    try:
        stages = [int(s) for s in a.stages.split(",")]
    except ValueError:
        raise UserError(f"--stages must be comma-separated integers, got {a.stages!r}") from None
    return Step(stages, tau, a.epochs)


DEFAULT_EPS = {"digits": 0.2, "mnist": 0.3, "cifar10": 8 / 255}


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


def _build_maximizer(a: argparse.Namespace):
    """The inner maximizer of ``--maximizer`` and ``--maximizer-arg``; ``None`` means the trainer's default."""
    if a.method == "erm":
        if a.maximizer != "pgd" or a.maximizer_arg:
            raise UserError("--method erm trains on clean data; drop --maximizer/--maximizer-arg")
        return None
    kwargs = {}
    for item in a.maximizer_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--maximizer-arg must be KEY=VALUE, got {item!r}")
        kwargs[key.strip().replace("-", "_")] = _value(value.strip())
    return build_maximizer(a.maximizer, a.eps, **kwargs)


def _cmd_train(a: argparse.Namespace) -> int:
    a.eps = DEFAULT_EPS[a.dataset] if a.eps is None else a.eps
    schedule = _build_schedule(a)
    maximizer = _build_maximizer(a)
    kind = a.method if a.maximizer == "pgd" else f"{a.method}-{a.maximizer}"
    name = a.name or f"{a.dataset}-{kind}-seed{a.seed}"
    out = Path(a.out) if a.out else Path("data/results") / f"{name}.json"
    ckpt = Path(a.checkpoint) if a.checkpoint else Path("data/checkpoints") / f"{name}.pt"
    distributed.init_from_env(a.device)  # under torchrun: join the process group (no-op otherwise)
    main_rank = distributed.is_main()  # only rank 0 prints, writes the JSON and removes the checkpoint
    device = select_device(a.device)
    train_set, test_set = load(a.dataset, path=a.data_path, root=a.data_root, download=a.download)
    if a.train_subset:
        train_set = torch.utils.data.TensorDataset(*(t[:a.train_subset] for t in train_set.tensors))
    seed_everything(a.seed)
    model = models.build(a.model or models.DEFAULT_MODEL[a.dataset])
    if hasattr(maximizer, "check_model"):
        maximizer.check_model(model)
    config = {k: v for k, v in vars(a).items() if k not in ("func", "command")}
    config.update(model=a.model or models.DEFAULT_MODEL[a.dataset], schedule=repr(schedule),
                  train_size=len(train_set), test_size=len(test_set), world_size=distributed.world_size())
    if ckpt.exists() and main_rank:
        print(f"resuming from checkpoint {ckpt}", file=sys.stderr)
    from tqdm.auto import tqdm
    bar = tqdm(total=a.epochs, desc=name, disable=not a.progress or not main_rank, unit="epoch")

    def report(rec: dict, _model: torch.nn.Module) -> None:
        if not main_rank:
            return
        acc = "" if rec["clean_acc"] is None else (
            f" clean {100 * rec['clean_acc']:.1f}% PGD-{a.eval_steps} {100 * rec['robust_acc']:.1f}%")
        if rec.get("fgsm_acc") is not None:
            acc += f" FGSM {100 * rec['fgsm_acc']:.1f}%"
            acc += " CATASTROPHIC OVERFITTING" if rec["catastrophic_overfitting"] else ""
        bar.update(1)
        bar.write(f"epoch {rec['epoch']:3d}/{a.epochs} K={rec['steps']:<3d} alpha={rec['alpha']:.4f} "
                  f"loss {rec['train_loss']:.4f}{acc} time {rec['time']:.1f}s passes {rec['passes']}")

    history = train(model, train_set, test_set, epochs=a.epochs, eps=a.eps, schedule=schedule,
                    maximizer=maximizer, detect_overfitting=a.detect_overfitting, optimizer=a.optimizer, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay,
                    lr_schedule=a.lr_schedule, batch_size=a.batch_size, seed=a.seed, device=device,
                    amp=a.amp, channels_last=a.channels_last, eval_steps=a.eval_steps,
                    eval_restarts=a.eval_restarts, eval_subset=a.eval_subset, eval_every=a.eval_every,
                    checkpoint=ckpt, callback=report)
    bar.close()
    distributed.shutdown()
    if not main_rank:
        return 0
    command = "python -m amata_lib " + " ".join(shlex.quote(s) for s in sys.argv[1:])
    save_run(out, config=config, history=history, seed=a.seed, dataset=a.dataset, device=device, command=command)
    if not a.keep_checkpoint:
        ckpt.unlink(missing_ok=True)
    print(f"wrote {out}")
    return 0


def _cmd_schedule(a: argparse.Namespace) -> int:
    a.eps = 0.3 if a.eps is None else a.eps
    schedule = _build_schedule(a)
    if schedule is None:
        raise UserError("--method erm has no inner maximization to schedule")
    print(f"{schedule!r}")
    print(" epoch   K_t   alpha_t  passes/batch")
    for t, p in enumerate(schedule.plans()):
        print(f"{t:6d} {p.steps:5d} {p.alpha:9.5f} {p.passes:8d}")
    print(f"cost relative to PGD-{getattr(schedule, 'k_max', schedule.max_steps)}: {relative_cost(schedule):.3f}")
    return 0


def _cmd_show(a: argparse.Namespace) -> int:
    run = load_run(a.path)
    prov = run["provenance"]
    print(f"{a.path}: dataset {run['dataset']}, seed {run['seed']}, {prov['device']}, "
          f"commit {prov['git_commit']}, {prov['created']}")
    if prov.get("command"):
        print(f"command: {prov['command']}")
    history = run["history"]
    fgsm = any("fgsm_acc" in r for r in history)
    layer = any("layer_passes" in r for r in history)

    def pct(value: float | None) -> str:
        return "   -  " if value is None else f"{100 * value:5.1f}%"

    print(" epoch   K   time(s)   passes" + (" layer" if layer else "") + "  clean  robust" + ("   FGSM" if fgsm else ""))
    for r in history:
        line = f"{r['epoch']:6d} {r.get('steps', 0):3d} {r['time']:9.1f} {r['passes']:>8}"
        line += f" {r.get('layer_passes', 0):>5}" if layer else ""
        line += f" {pct(r.get('clean_acc'))} {pct(r.get('robust_acc'))}"
        if fgsm:
            line += f" {pct(r.get('fgsm_acc'))}" + ("  catastrophic overfitting" if r.get("catastrophic_overfitting") else "")
        print(line)
    return 0


def _cmd_experiment(a: argparse.Namespace) -> int:
    if a.list:
        for name in available():
            cfg = load_config(name)
            print(f"{name} (version {cfg['version']}): {cfg['dataset']}, {cfg['model']}, eps {cfg['eps']:.4g}, "
                  f"{cfg['epochs']} epochs; runs: {', '.join(r['name'] for r in cfg['runs'])}")
        return 0
    if a.name is None:
        raise UserError("give an experiment NAME or --list (see 'python -m amata_lib experiment --help')")
    runs = [r for r in a.runs.split(",") if r] if a.runs else None
    paths = run_experiment(a.name, runs=runs, train_subset=a.train_subset, epochs=a.epochs,
                           eval_subset=a.eval_subset, autoattack_n=a.autoattack_n, seed=a.seed, device=a.device,
                           data_path=a.data_path, data_root=a.data_root, download=a.download, out_dir=a.out_dir,
                           checkpoint_dir=a.checkpoint_dir, keep_checkpoints=a.keep_checkpoints,
                           log=lambda line: print(line, flush=True))
    print(f"{len(paths)} result(s) in {paths[0].parent}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``amata_lib`` argument parser."""
    p = _Parser(prog="python -m amata_lib",
                description="Adversarial training accelerated by annealing (Amata, Ye et al. AAAI 2021).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model (ERM, PGD-K or an annealing schedule) and save JSON",
                       description="Train on a dataset and write the run with provenance to JSON. "
                                   "Interrupt it any time: the same command resumes from the checkpoint.")
    _schedule_args(t)
    g = t.add_argument_group("data and model")
    g.add_argument("--dataset", choices=DATASETS, default="digits", help="dataset (default: digits, bundled)")
    g.add_argument("--data-path", default=None, help="mnist: .npz with x_train, y_train, x_test, y_test "
                                                     "(default: $AMATA_MNIST)")
    g.add_argument("--data-root", default="data/datasets", help="folder of torchvision datasets")
    g.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    g.add_argument("--train-subset", type=int, default=None, help="use only the first N training examples")
    g.add_argument("--model", choices=sorted(models.MODELS), default=None,
                   help="model (default: digits_cnn, lenet for mnist, preact_resnet18 for cifar10)")
    g = t.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="outer optimiser (default: sgd)")
    g.add_argument("--lr", type=float, default=0.05, help="learning rate (default: 0.05)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (default: 5e-4)")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant", help="(default: constant)")
    g.add_argument("--batch-size", type=int, default=128, help="minibatch size (default: 128)")
    g.add_argument("--seed", type=int, default=0, help="seed of init, shuffling and random starts (default: 0)")
    g.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ... (default: auto)")
    g.add_argument("--amp", action="store_true", help="bf16 autocast for training on CUDA")
    g.add_argument("--channels-last", action="store_true",
                   help="channels_last memory format (faster conv nets on tensor-core GPUs)")
    g = t.add_argument_group("evaluation after each epoch")
    g.add_argument("--eval-steps", type=int, default=20, help="PGD steps of the robust test (default: 20)")
    g.add_argument("--eval-restarts", type=int, default=1, help="PGD restarts, worst case kept (default: 1)")
    g.add_argument("--eval-subset", type=int, default=None, help="test on the first N test examples only")
    g.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs and at the end")
    g = t.add_argument_group("output")
    g.add_argument("--name", default=None, help="run name (default: DATASET-METHOD-seedSEED)")
    g.add_argument("--out", default=None, help="JSON path (default: data/results/NAME.json)")
    g.add_argument("--checkpoint", default=None, help="checkpoint path (default: data/checkpoints/NAME.pt)")
    g.add_argument("--keep-checkpoint", action="store_true", help="keep the checkpoint after success")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    t.set_defaults(func=_cmd_train)

    s = sub.add_parser("schedule", help="print a schedule's K_t, alpha_t and cost relative to PGD-K_max",
                       description="Print the plan of every epoch and the schedule's relative cost.")
    _schedule_args(s)
    s.set_defaults(func=_cmd_schedule)

    w = sub.add_parser("show", help="summarise a saved run (JSON)", description="Print a saved run's history.")
    w.add_argument("path", help="a JSON file written by 'train'")
    w.set_defaults(func=_cmd_show)

    e = sub.add_parser("experiment", help="run a named experiment config (a table of the paper)",
                       description="Run every run of a named, versioned config (amata_lib/configs/NAME.json), "
                                   "evaluate each final model and write OUT_DIR/NAME[-reduced]/RUN.json. "
                                   "Finished runs are skipped; the same command resumes an interrupted one.")
    e.add_argument("name", nargs="?", help="experiment name (see --list) or a path to a config .json")
    e.add_argument("--list", action="store_true", help="list the shipped experiments and exit")
    e.add_argument("--runs", default=None, help="comma-separated run names (default: all of the config)")
    g = e.add_argument_group("reduced scale (results go to NAME-reduced and record the overrides)")
    g.add_argument("--train-subset", type=int, default=None, help="train on the first N training examples")
    g.add_argument("--epochs", type=int, default=None, help="train N epochs instead of the config's")
    g.add_argument("--eval-subset", type=int, default=None, help="evaluate on the first N test examples")
    g.add_argument("--autoattack-n", type=int, default=None,
                   help="final report (clean, PGD, CW, AutoAttack) on the first N of those")
    e.add_argument("--seed", type=int, default=None,
                   help="another seed than the config's (results go to NAME[-reduced]-seedN)")
    g = e.add_argument_group("machine and files")
    g.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ... (default: auto)")
    g.add_argument("--data-path", default=None, help="mnist: .npz with x_train, y_train, x_test, y_test "
                                                     "(default: $AMATA_MNIST)")
    g.add_argument("--data-root", default="data/datasets", help="folder of torchvision datasets")
    g.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    g.add_argument("--out-dir", default="data/results", help="results folder (default: data/results)")
    g.add_argument("--checkpoint-dir", default="data/checkpoints", help="checkpoints (default: data/checkpoints)")
    g.add_argument("--keep-checkpoints", action="store_true", help="keep each trained model's final checkpoint")
    e.set_defaults(func=_cmd_experiment)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user mistakes print one line to stderr and return 2."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UserError, ValueError, DatasetUnavailable, ResultError) as exc:
        print(f"amata_lib: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("amata_lib: interrupted; run the same command again to resume from the checkpoint", file=sys.stderr)
        return 130
