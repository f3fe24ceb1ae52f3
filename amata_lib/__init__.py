"""amata_lib: adversarial training accelerated by annealing (Amata, Ye et al., AAAI 2021).

A schedule (:mod:`amata_lib.schedules`) decides each epoch's inner-maximizer plan
``(K_t, alpha_t)``; an inner maximizer (:mod:`amata_lib.maximizers`) uses it; the
trainer (:func:`amata_lib.train`) combines the two.
"""
__version__ = "0.1.0"

from .attacks import cw_loss, fgsm, pgd
from .data import DatasetUnavailable, load
from .evaluation import (accuracy, autoattack_accuracy, cw_accuracy, pgd_accuracy, robustness_report,
                         time_to_target)
from .maximizers import MAXIMIZERS, Clean, FATMaximizer, FOSCMaximizer, PGDMaximizer, build_maximizer
from .models import DigitsCNN, LeNet, PreActResNet18
from .plus import ATTAMaximizer, FastMaximizer, FreeMaximizer, YOPOMaximizer
from .results import ResultError, load_run, save_run
from .schedules import Amata, Constant, Exponential, FromFunction, Plan, Schedule, Step, relative_cost
from .training import select_device, train

__all__ = [
    "ATTAMaximizer", "FastMaximizer", "FreeMaximizer", "YOPOMaximizer", "MAXIMIZERS", "FATMaximizer", "FOSCMaximizer", "autoattack_accuracy", "build_maximizer", "robustness_report",
    "Amata", "Clean", "Constant", "DatasetUnavailable", "DigitsCNN", "Exponential", "FromFunction",
    "LeNet", "PGDMaximizer", "Plan", "PreActResNet18", "ResultError", "Schedule", "Step", "accuracy",
    "cw_accuracy", "cw_loss", "fgsm", "load", "load_run", "pgd", "pgd_accuracy", "relative_cost",
    "save_run", "select_device", "time_to_target", "train",
]
