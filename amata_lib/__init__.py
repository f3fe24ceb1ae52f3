"""amata_lib: adversarial training accelerated by annealing (Amata, Ye et al., AAAI 2021).

A schedule (:mod:`amata_lib.schedules`) decides each epoch's inner-maximizer plan
``(K_t, alpha_t)``; an inner maximizer (:mod:`amata_lib.maximizers`,
:mod:`amata_lib.plus`) uses it; the trainer (:func:`amata_lib.train`) combines the
two. The names below are the public API, grouped by module as in ``CONTRIBUTING.md``.

Names are imported on first use (``from amata_lib import train`` works as usual), so
``import amata_lib`` and ``python -m amata_lib --help`` start without loading every module.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_API: dict[str, tuple[str, ...]] = {
    "attacks": ("cw_loss", "fgsm", "fosc", "pgd", "project"),
    "schedules": ("Amata", "Constant", "Exponential", "FromFunction", "Plan", "Schedule", "Step",
                  "make_schedule", "relative_cost"),
    "maximizers": ("Clean", "FATMaximizer", "FOSCMaximizer", "Maximizer", "PGDMaximizer", "StepResult"),
    "plus": ("ATTAMaximizer", "FastMaximizer", "FreeMaximizer", "YOPOMaximizer"),
    "registry": ("MAXIMIZERS", "build_maximizer"),
    "data": ("DatasetUnavailable", "batches", "check_dataset", "load"),
    "models": ("DigitsCNN", "LeNet", "PreActResNet18"),
    "training": ("run_settings", "select_device", "train"),
    "checkpoints": ("RunLock", "load_checkpoint"),
    "evaluation": ("accuracy", "autoattack_accuracy", "cw_accuracy", "fgsm_accuracy", "pgd_accuracy",
                   "robustness_report"),
    "history": ("catastrophic_overfitting", "epoch_line", "time_to_target"),
    "experiments": ("ConfigError", "load_config", "load_results", "run_experiment"),
    "results": ("ResultError", "load_run", "save_run"),
    "criterion": ("GridSpace", "SearchSpace", "criterion_c", "criterion_c_exact"),
    "errors": ("CheckpointError", "RunLocked", "UserError", "WriteError"),
}
_WHERE = {name: module for module, names in _API.items() for name in names}
__all__ = [name for names in _API.values() for name in names]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    try:  # submodules: amata_lib.distributed, amata_lib.control, ...
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":  # a module that exists but lacks a dependency
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(globals()))
