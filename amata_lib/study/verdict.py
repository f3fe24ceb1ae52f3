"""Verdicts fixed before the runs: a protocol in the config, then seeds, intervals and a rule.

An experiment config may carry a ``protocol`` (:class:`ProtocolSpec`), written before
any run: the seeds, the reference row (PGD-K_max), how the robust-accuracy target is
derived, which cost the verdict is on (``passes`` or ``time``), the rows compared with
the reference and the rules that turn intervals into words. :func:`verdict` applies it
to the stored results; nothing in it looks at the results before the rule is fixed.

The rules (all per seed, paired: seed ``s`` of a row and of the reference share their
initial weights, shuffling and random starts):

* **target** -- ``fixed``: ``value``; ``reference-final-minus``: the mean over seeds of
  the reference's last evaluated robust accuracy minus ``margin`` ("PGD-K_max's final
  robust accuracy minus 2 points"), and 0 if that is negative (a reference that never
  became robust: then every run reaches the target at its first evaluation);
* **cost to target** -- the cumulative training cost (passes or seconds, a shared
  warm-up included) at the first evaluated epoch at or above the target (``hit:
  first``), or from which the run stays above it (``hit: stay``); ``inf`` if never;
* **speed-up** -- the ratio of a row's cost to the reference's for each seed, and a
  percentile bootstrap interval of its mean over seeds (``bootstrap`` resamples of the
  seeds, numpy generator seeded with 0, ``confidence`` level). A seed where the row
  never reaches the target has ratio ``inf``; one where only the reference misses has
  ratio 0; where both miss the seed is left out (and counted in ``both_missed``).
  Verdict: ``faster`` if the upper end is below 1, ``slower`` if the lower end is
  above 1, else ``no difference shown``; and against the paper's claim (1/3 to 1/2 of
  the time): ``within the paper's range`` if the interval meets [1/3, 1/2],
  ``faster than the paper's range`` / ``slower than the paper's range`` otherwise;
* **robustness** -- the difference of the final report's PGD accuracy (with restarts)
  of the row minus the reference, per seed, with its bootstrap interval: ``as robust``
  (within ``robust_margin``) if the lower end is above ``-robust_margin``, ``less
  robust`` if the upper end is below it, else ``inconclusive``. The same interval is
  given for AutoAttack where every seed of both has it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.history import time_to_target
from ..infra.errors import UserError
from ..infra.results import ResultError, load_run

PAPER_RANGE = (1 / 3, 1 / 2)
MEASURES = ("passes", "time")


class TargetSpec(BaseModel):
    """How the robust-accuracy target is set: a fixed value, or the reference's final level minus a margin."""

    model_config = ConfigDict(extra="forbid", strict=True)
    rule: Literal["fixed", "reference-final-minus"]
    value: Annotated[float, Field(ge=0, le=1)] | None = None
    margin: Annotated[float, Field(ge=0, le=1)] | None = None

    @model_validator(mode="after")
    def _fits_rule(self) -> TargetSpec:
        wanted = "value" if self.rule == "fixed" else "margin"
        other = "margin" if wanted == "value" else "value"
        if getattr(self, wanted) is None:
            raise ValueError(f"target rule {self.rule!r} needs {wanted!r}")
        if getattr(self, other) is not None:
            raise ValueError(f"target rule {self.rule!r} takes {wanted!r}, not {other!r}")
        return self


class ConvergenceSpec(BaseModel):
    """When the reference counts as converged, checked before any speed-up word is printed.

    ``min_reached``: the reference reaches its own target in at least this many seeds
    (default: all seeds but one); ``window``, ``max_move``: the spread (max - min) of its
    last ``window`` evaluated robust accuracies, averaged over seeds, stays below ``max_move``.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    min_reached: Annotated[int, Field(ge=1)] | None = None
    window: Annotated[int, Field(ge=2)] = 3
    max_move: Annotated[float, Field(gt=0, le=1)] = 0.01


class ProtocolSpec(BaseModel):
    """The verdict protocol of an experiment, fixed in its config before any run."""

    model_config = ConfigDict(extra="forbid", strict=True)
    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    reference: str
    compare: Annotated[list[str], Field(min_length=1)]
    target: TargetSpec
    hit: Literal["first", "stay"] = "first"
    measure: Literal[MEASURES] = "passes"
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    bootstrap: Annotated[int, Field(ge=100)] = 10000
    robust_margin: Annotated[float, Field(ge=0, le=1)] = 0.02
    autoattack_standard_seeds: list[Annotated[int, Field(ge=0)]] = []
    convergence: ConvergenceSpec = ConvergenceSpec()

    @model_validator(mode="after")
    def _consistent(self) -> ProtocolSpec:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must differ, got {self.seeds}")
        if self.reference in self.compare:
            raise ValueError(f"compare must not contain the reference {self.reference!r}")
        if self.convergence.min_reached is not None and self.convergence.min_reached > len(self.seeds):
            raise ValueError(f"convergence.min_reached {self.convergence.min_reached} exceeds the "
                             f"{len(self.seeds)} seeds")
        extra = sorted(set(self.autoattack_standard_seeds) - set(self.seeds))
        if extra:
            raise ValueError(f"autoattack_standard_seeds {extra} are not among the seeds {self.seeds}")
        return self


def bootstrap_interval(values: Sequence[float], *, confidence: float = 0.95, resamples: int = 10000,
                       seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` and a percentile bootstrap interval of it: ``(mean, low, high)``.

    Resamples the values with replacement ``resamples`` times (numpy generator seeded
    with ``seed``); the ends are order statistics of the resampled means (numpy's
    ``inverted_cdf``, no interpolation), so ``inf`` values are allowed: a resample
    holding one has mean ``inf``, and an end can be ``inf``. NaN is refused. With a
    single value the interval is that value.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise UserError("bootstrap_interval needs at least one value")
    if np.isnan(x).any():
        raise UserError("bootstrap_interval got NaN among the values")
    if not 0 < confidence < 1:
        raise UserError(f"confidence must be in (0, 1), got {confidence!r}")
    rng = np.random.default_rng(seed)
    with np.errstate(invalid="ignore"):
        means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
        lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2], method="inverted_cdf")
        mean = float(x.mean())
    return mean, float(lo), float(hi)


def final_robust_acc(result: dict) -> float:
    """The last evaluated per-epoch robust accuracy of a stored run."""
    rated = [r["robust_acc"] for r in result["history"] if r.get("robust_acc") is not None]
    if not rated:
        raise UserError(f"run {result.get('run')!r} has no evaluated epoch")
    return rated[-1]


def derive_target(protocol: ProtocolSpec, reference_runs: Sequence[dict]) -> float:
    """The robust-accuracy target of ``protocol`` from the reference's stored runs (one per seed)."""
    if protocol.target.rule == "fixed":
        return protocol.target.value
    finals = [final_robust_acc(r) for r in reference_runs]
    return max(0.0, float(np.mean(finals)) - protocol.target.margin)


def cost_to_target(result: dict, target: float, *, measure: str = "passes", hit: str = "first") -> float:
    """Training cost (``passes`` or ``time``, warm-up included) until ``target``; ``inf`` if never reached."""
    if measure not in MEASURES:
        raise UserError(f"measure must be one of {MEASURES}, got {measure!r}")
    reached = time_to_target(result["history"], target, stay=hit == "stay")
    if reached is None:
        return math.inf
    warmup = (result.get("report") or {}).get("warmup") or {}
    return float(reached[measure]) + float(warmup.get(measure, 0))


def _speed_words(lo: float, hi: float) -> tuple[str, str]:
    if hi < 1:
        word = "faster"
    elif lo > 1:
        word = "slower"
    else:
        word = "no difference shown"
    if hi < PAPER_RANGE[0]:
        paper = "faster than the paper's range"
    elif lo > PAPER_RANGE[1]:
        paper = "slower than the paper's range"
    else:
        paper = "within the paper's range"
    return word, paper


def _robust_words(lo: float, hi: float, margin: float) -> str:
    if lo > -margin:
        return "as robust"
    if hi < -margin:
        return "less robust"
    return "inconclusive"


def verdict(protocol: ProtocolSpec | dict, runs: dict[int, dict[str, dict]]) -> dict:
    """Apply ``protocol`` to stored results ``runs[seed][run_name]``; return target, intervals and verdicts.

    Raises
    ------
    UserError
        When a seed or a run the protocol needs has no stored result (naming them).
    """
    p = protocol if isinstance(protocol, ProtocolSpec) else ProtocolSpec.model_validate(protocol)
    needed = [p.reference, *p.compare]
    missing = [f"{name} (seed {s})" for s in p.seeds for name in needed if name not in runs.get(s, {})]
    if missing:
        raise UserError(f"the protocol needs results that are not stored: {', '.join(missing[:6])}"
                        + (f" and {len(missing) - 6} more" if len(missing) > 6 else ""))
    target = derive_target(p, [runs[s][p.reference] for s in p.seeds])
    kw = dict(confidence=p.confidence, resamples=p.bootstrap)
    rows = {}  # the reference first (``needed`` starts with it): the other rows are paired with its seeds
    for name in needed:
        per_seed = []
        for s in p.seeds:
            run = runs[s][name]
            rep = run.get("report") or {}
            per_seed.append({"seed": s, "cost": cost_to_target(run, target, measure=p.measure, hit=p.hit),
                             "final_robust_acc": final_robust_acc(run), "pgd": rep.get("pgd"),
                             "autoattack": rep.get("autoattack"), "cw": rep.get("cw"), "clean": rep.get("clean")})
        row: dict[str, Any] = {"per_seed": per_seed, "k_used": [r["steps"] for r in runs[p.seeds[0]][name]["history"]],
                               "reached": sum(math.isfinite(r["cost"]) for r in per_seed)}
        for key in ("pgd", "autoattack", "final_robust_acc"):
            values = [r[key] for r in per_seed if r[key] is not None]
            if len(values) == len(per_seed):
                row[key] = bootstrap_interval(values, **kw)
        if name != p.reference:
            ref_rows = {r["seed"]: r for r in rows[p.reference]["per_seed"]}
            ratios, both = [], 0
            for r in per_seed:
                ref = ref_rows[r["seed"]]["cost"]
                if math.isinf(ref) and math.isinf(r["cost"]):
                    both += 1
                    continue
                ratios.append(0.0 if math.isinf(ref) else r["cost"] / ref)
            row["both_missed"] = both
            if ratios:
                row["ratio"] = bootstrap_interval(ratios, **kw)
                row["speed"], row["paper"] = _speed_words(*row["ratio"][1:])
            else:
                row["speed"] = row["paper"] = "no seed reached the target"
            for key in ("pgd", "autoattack"):
                diffs = [r[key] - ref_rows[r["seed"]][key] for r in per_seed
                         if r[key] is not None and ref_rows[r["seed"]][key] is not None]
                if len(diffs) == len(per_seed):
                    row[f"{key}_diff"] = bootstrap_interval(diffs, **kw)
            row["robust"] = (_robust_words(*row["pgd_diff"][1:], p.robust_margin) if "pgd_diff" in row
                             else "no final report")
        rows[name] = row
    return {"protocol": p.model_dump(), "target": target, "rows": rows}


def _interval(iv: tuple[float, float, float] | None, scale: float = 1.0, digits: int = 2) -> str:
    if iv is None:
        return "-"
    mean, lo, hi = (v * scale for v in iv)
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def format_verdict(v: dict) -> str:
    """The verdict as lines of text: target, then one line per row (intervals are 95 % bootstrap by default)."""
    p = v["protocol"]
    conf = round(100 * p["confidence"])
    lines = [f"target: robust accuracy {100 * v['target']:.1f}% ({p['target']['rule']}"
             + (f", margin {100 * p['target']['margin']:.0f} points" if p["target"].get("margin") is not None else "")
             + f"); cost = {p['measure']} to the {p['hit']} epoch at the target; "
             f"{len(p['seeds'])} seeds, {conf}% bootstrap intervals"]
    width = max(14, *(len(n) for n in v["rows"]))
    for name, row in v["rows"].items():
        line = (f"{name:>{width}}: reached {row['reached']}/{len(p['seeds'])}, final PGD "
                f"{_interval(row.get('pgd'), 100, 1)}%")
        if "autoattack" in row:
            line += f", AutoAttack {_interval(row['autoattack'], 100, 1)}%"
        if name == p["reference"]:
            line += "  (reference)"
        else:
            line += (f"; cost ratio {_interval(row.get('ratio'))} -> {row['speed']} ({row['paper']}); "
                     f"PGD difference {_interval(row.get('pgd_diff'), 100, 1)} points -> {row['robust']}")
        lines.append(line)
    return "\n".join(lines)


def collect(folder: str | Path, *, experiment: str | None = None, seed: int | None = None) -> dict[str, dict]:
    """The stored results of one seed of an experiment, ``{run name: result}``, from ``folder/*.json``.

    Each file must hold the run its place says: its ``config.run.name`` is its file name,
    and, when given, its ``config.experiment`` is ``experiment`` and its ``seed`` is ``seed``.
    A file that holds another run is refused, naming it, so that a copied or misplaced
    file cannot enter a verdict.
    """
    found = {}
    for path in sorted(Path(folder).glob("*.json")):
        result = load_run(path)
        cfg = result["config"]
        held = {"run": (cfg.get("run") or {}).get("name"), "experiment": cfg.get("experiment"),
                "seed": result["seed"]}
        wanted = {"run": path.stem, "experiment": experiment, "seed": seed}
        wrong = [f"{k} {held[k]!r}, not {v!r}" for k, v in wanted.items() if v is not None and held[k] != v]
        if wrong:
            raise ResultError(f"{path} holds another run than its place says ({'; '.join(wrong)}); "
                              f"move it back where it belongs or delete it")
        found[path.stem] = dict(result, run=path.stem)
    return found
