"""What a training history says: time to a robust accuracy (the paper's headline measure),
catastrophic overfitting, and the one-line summary of an epoch.

A history is the list of per-epoch records that :func:`amata_lib.train` returns
(and a result JSON stores); nothing here runs a model.
"""
from __future__ import annotations

from typing import Sequence

from ..infra.checks import check_real
from ..infra.errors import UserError


def catastrophic_overfitting(history: Sequence[dict], drop: float = 0.2, gap: float = 0.5) -> bool:
    """Whether the last record shows catastrophic overfitting (Wong, Rice & Kolter 2020).

    Our operational test of their symptom -- the model defeats the one-step attack but
    not the multi-step one -- is true if either holds for the last record:

    * its PGD accuracy (``robust_acc``) lies at least ``drop`` (absolute) below the best
      of the run so far while its FGSM accuracy (``fgsm_acc``) is no lower than at that
      best epoch (the collapse of a run that had become robust);
    * its FGSM accuracy exceeds its PGD accuracy by at least ``gap`` (a run that never
      became robust to PGD while FGSM accuracy climbs; adversarially trained models
      normally show a gap of a few to 20 points).

    Records without both accuracies are skipped; ``False`` if the last has none.
    """
    check_real("drop", drop, minimum=0, strict=True)
    check_real("gap", gap, minimum=0, strict=True)
    rated = [r for r in history if r.get("robust_acc") is not None and r.get("fgsm_acc") is not None]
    if not rated or rated[-1] is not history[-1]:
        return False
    best = max(rated, key=lambda r: r["robust_acc"])
    last = rated[-1]
    collapsed = last["robust_acc"] <= best["robust_acc"] - drop and last["fgsm_acc"] >= best["fgsm_acc"]
    return collapsed or last["fgsm_acc"] - last["robust_acc"] >= gap


def overfitting_epochs(history: Sequence[dict]) -> list[int] | None:
    """The epochs (from 1) that :func:`catastrophic_overfitting` flags; ``None`` for a run without the FGSM check."""
    if all(r.get("fgsm_acc") is None for r in history):
        return None
    return [r["epoch"] for i, r in enumerate(history) if catastrophic_overfitting(history[:i + 1])]


def time_to_target(history: Sequence[dict], robust_acc: float, *, stay: bool = False) -> dict | None:
    """Training time and passes at the first evaluated epoch reaching ``robust_acc``.

    With ``stay=True``, the first evaluated epoch from which *every* later evaluation
    stays at or above the target (a rule less sensitive to one lucky evaluation).
    Returns ``{"epoch", "time", "passes", "robust_acc"}`` or ``None`` if the run never
    reaches the target (or, with ``stay``, ends below it). ``time`` excludes evaluation
    (see :func:`amata_lib.train`).
    """
    if not 0 <= robust_acc <= 1:
        raise UserError(f"robust_acc must be a fraction in [0, 1], got {robust_acc!r}")
    rated = [rec for rec in history if rec.get("robust_acc") is not None]
    if stay:  # walk back from the end while the run stays at or above the target
        hits = []
        for rec in reversed(rated):
            if rec["robust_acc"] < robust_acc:
                break
            hits.append(rec)
        hit = hits[-1] if hits else None
    else:
        hit = next((rec for rec in rated if rec["robust_acc"] >= robust_acc), None)
    return None if hit is None else {k: hit[k] for k in ("epoch", "time", "passes", "robust_acc")}


def epoch_line(record: dict, epochs: int, eval_steps: int | None = None) -> str:
    """One line for an epoch record: K_t, alpha_t, loss, accuracies, FGSM check, time and passes."""
    acc = ""
    if record.get("clean_acc") is not None:
        attack = "robust" if eval_steps is None else f"PGD-{eval_steps}"
        acc = f" clean {100 * record['clean_acc']:.1f}% {attack} {100 * record['robust_acc']:.1f}%"
    if record.get("fgsm_acc") is not None:
        acc += f" FGSM {100 * record['fgsm_acc']:.1f}%"
        acc += " CATASTROPHIC OVERFITTING" if record["catastrophic_overfitting"] else ""
    return (f"epoch {record['epoch']:3d}/{epochs} K={record['steps']:<3d} alpha={record['alpha']:.4f} "
            f"loss {record['train_loss']:.4f}{acc} time {record['time']:.1f}s passes {record['passes']}")
