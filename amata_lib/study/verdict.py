"""Verdicts fixed before the runs: a protocol in the config, then seeds, censored costs, intervals and a rule.

An experiment config may carry a ``protocol`` (:class:`ProtocolSpec`), written before
any run: the seeds, the reference row (PGD-K_max), how the robust-accuracy target is
derived, which cost the headline is on (``passes`` or ``time``; both are always shown),
the rows compared with the reference, the convergence rule of the reference and the
rules that turn intervals into words. :func:`verdict` applies it to the stored results;
nothing in it looks at the results before the rule is fixed.

The rules (paired by seed: seed ``s`` of a row and of the reference share their
initial weights, shuffling and random starts):

* **target** -- ``fixed``: ``value``; ``reference-final-minus``: the mean over seeds of
  the reference's last evaluated robust accuracy minus ``margin``, and 0 if negative.
* **cost to target** -- the cumulative training cost (passes or seconds, a shared
  warm-up included) at the first evaluated epoch at or above the target (``hit:
  first``), or from which the run stays above it (``hit: stay``). A run that never
  gets there is **censored**: all we know is that its cost exceeds its whole run's
  (:func:`run_costs`).
* **speed-up, COCO's expected running time** (Hansen et al.): ``ERT(row)`` is the sum
  over seeds of every run's cost -- to the target where it got there, the whole run
  where it did not -- divided by the number of runs that got there (:func:`ert`); the
  speed-up is ``ERT(row) / ERT(reference)``. A row that never reaches the target has
  no finite ERT: it is at least the sum of its full costs (as if its next run
  succeeded at once), which gives a bound on the ratio, shown as ``>=``; likewise
  ``<=`` for a reference that never reaches it. No 0 and no inf pose as a ratio.
* **per seed** -- the ratio of a row's cost to the reference's: a number where both
  reached the target, a bound where one did (``<= c / C_ref`` when only the row got
  there, ``>= C / c_ref`` when only the reference did), ``?`` where neither did
  (:class:`Ratio`).
* **interval** -- the distribution-free sign-test interval of the median per-seed ratio
  (:func:`sign_interval`): the ``k``-th smallest and ``k``-th largest per-seed ratio, a
  bound entering at its least favourable end, ``k`` the largest whose level
  ``1 - 2 P(Bin(n, 1/2) < k)`` is at least ``confidence``, or ``k = 1`` with its level
  stated when ``n`` is too small (5 seeds: 93.75 %; 10 seeds: ``k = 2``, 97.85 %). Its
  coverage holds for any distribution of the ratios and under censoring; the percentile
  bootstrap this module used before covered 80-83 % at 5 seeds on ratios shaped like
  ours (:func:`simulate_coverage`). An interval open on both sides is not printed.
* **speed words** -- ``faster`` if the interval lies below 1, ``slower`` if above,
  else ``no difference shown``; ``never reached the target`` for a row without a single
  hit (no ERT); against the paper's claim (1/3 to 1/2 of the time), for an interval
  closed on both sides: ``within the paper's range`` only if it lies inside [1/3, 1/2],
  ``overlaps the paper's range`` if it meets it without lying inside,
  ``faster than``/``slower than the paper's range`` if it lies wholly below/above.
* **convergence** (:class:`ConvergenceSpec`) -- checked before any speed word: the
  reference reaches its own target in at least ``min_reached`` seeds (default: all but
  one) and the seed-mean of its per-epoch robust accuracy spreads by less than
  ``max_move`` over its last ``window`` evaluations. Otherwise every speed word is
  ``provisional``, with the reason.
* **robustness** -- the per-seed difference of the final report's PGD accuracy (with
  restarts), row minus reference: its mean and Student-t interval (:func:`t_interval`),
  cut to [-1, 1] (accuracies' intervals to [0, 1]).
  ``as robust`` if the interval lies within ``+-robust_margin``, ``more robust`` if it
  lies wholly above ``+robust_margin``, ``less robust`` if wholly below
  ``-robust_margin``, ``not less robust`` if it lies above ``-robust_margin`` but reaches
  beyond ``+robust_margin``, else ``inconclusive``. The same for AutoAttack where every
  seed has it.
* **provenance** -- a row with a result made from uncommitted library code
  (``library_dirty``, or a commit marked ``+dirty``) is marked in every table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats

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


def run_costs(result: dict, target: float, *, measure: str = "passes", hit: str = "first") -> tuple[float, bool]:
    """``(cost, reached)``: the cost to ``target`` if the run got there, else its whole run's cost (censored)."""
    cost = cost_to_target(result, target, measure=measure, hit=hit)
    if math.isfinite(cost):
        return cost, True
    warmup = (result.get("report") or {}).get("warmup") or {}
    return float(result["history"][-1][measure]) + float(warmup.get(measure, 0)), False


def ert(costs: Sequence[tuple[float, bool]]) -> tuple[float, str]:
    """COCO's expected running time of ``(cost, reached)`` runs, and ``"="`` or ``">="`` (no run reached: a bound).

    ``sum(cost) / #reached``; with no run reaching the target, the sum itself, a lower bound.
    """
    total, hits = sum(c for c, _ in costs), sum(r for _, r in costs)
    return (total / hits, "=") if hits else (total, ">=")


@dataclass(frozen=True)
class Ratio:
    """A per-seed cost ratio: ``value`` exactly (``kind`` ``"="``), a bound (``"<="``, ``">="``), or ``"?"``."""

    value: float | None
    kind: str

    def ends(self) -> tuple[float, float]:
        """The least and the largest value the ratio can have."""
        if self.kind == "=":
            return self.value, self.value
        if self.kind == "<=":
            return 0.0, self.value
        if self.kind == ">=":
            return self.value, math.inf
        return 0.0, math.inf

    def __str__(self) -> str:
        if self.kind == "?":
            return "?"
        return f"{self.value:.2f}" if self.kind == "=" else f"{self.kind} {self.value:.2f}"


def seed_ratio(row: tuple[float, bool], ref: tuple[float, bool]) -> Ratio:
    """The ratio of one seed's ``(cost, reached)`` to the reference's, a bound where one was censored."""
    (c, hit), (r, ref_hit) = row, ref
    if hit and ref_hit:
        return Ratio(c / r, "=")
    if hit:
        return Ratio(c / r, "<=")  # the reference's true cost exceeds r
    if ref_hit:
        return Ratio(c / r, ">=")  # the row's true cost exceeds c
    return Ratio(None, "?")


def sign_level(n: int, k: int) -> float:
    """Coverage of ``[x_(k), x_(n+1-k)]`` for the median of ``n`` independent draws: ``1 - 2 P(Bin(n, 1/2) < k)``."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n


def sign_interval(ratios: Sequence[Ratio], confidence: float = 0.95) -> tuple[float, float, float]:
    """The sign-test interval of the median per-seed ratio: ``(low, high, level)``; bounds enter at their far ends.

    ``k`` is the largest with :func:`sign_level` ``>= confidence`` (at least 1); the low end is
    the ``k``-th smallest of the ratios' least values, the high end the ``k``-th largest of
    their largest values, so a censored seed can only widen the interval.
    """
    n = len(ratios)
    if n == 0:
        raise UserError("sign_interval needs at least one seed")
    k = max([1] + [j for j in range(1, (n + 1) // 2 + 1) if sign_level(n, j) >= confidence])
    lows = sorted(r.ends()[0] for r in ratios)
    highs = sorted(r.ends()[1] for r in ratios)
    return lows[k - 1], highs[n - k], sign_level(n, k)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval ``(mean, low, high)`` of paired values (a single value: itself)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0 or not np.isfinite(x).all():
        raise UserError(f"t_interval needs finite values, got {list(values)!r}")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def simulate_coverage(method: str, *, n: int, trials: int = 2000, sigma: float = 0.25, theta: float = 0.5,
                      censor: float = 0.0, confidence: float = 0.95, seed: int = 0) -> float:
    """How often an interval covers the true median ratio ``theta`` on simulated seeds shaped like ours.

    Each trial draws ``n`` paired seeds: the reference's cost ``C ~ lognormal(0, 0.2)`` and
    the row's ``theta * C * lognormal(0, sigma)``; with ``censor > 0`` a run whose cost
    exceeds the ``1 - censor`` quantile of its law is censored at its full run's cost (that
    quantile). ``method``: ``"sign"`` (:func:`sign_interval` on the per-seed ratios and
    bounds) or ``"bootstrap"`` (the percentile bootstrap of the mean per-seed ratio this
    module used before: a censored row counted inf, a censored reference 0).
    """
    rng = np.random.default_rng(seed)
    hits = 0
    z = stats.norm.ppf(1 - censor) if censor > 0 else math.inf
    for _ in range(trials):
        ref = np.exp(0.2 * rng.standard_normal(n))
        row = theta * ref * np.exp(sigma * rng.standard_normal(n))
        ref_cap, row_cap = math.exp(0.2 * z), theta * math.exp(math.hypot(0.2, sigma) * z)
        pairs = [seed_ratio((min(a, row_cap), a <= row_cap), (min(b, ref_cap), b <= ref_cap))
                 for a, b in zip(row, ref)]
        if method == "sign":
            lo, hi, _ = sign_interval(pairs, confidence)
        else:
            vals = [r.value if r.kind == "=" else (math.inf if r.kind == ">=" else 0.0) for r in pairs
                    if r.kind != "?"]
            if not vals:
                continue
            _, lo, hi = bootstrap_interval(vals, confidence=confidence, resamples=1000, seed=int(rng.integers(1e9)))
        hits += lo <= theta <= hi
    return hits / trials


def convergence(p: ProtocolSpec, ref_runs: Sequence[dict], target: float) -> dict:
    """Whether the reference converged (:class:`ConvergenceSpec`): its hits, its last spread, and why not."""
    rule = p.convergence
    need = rule.min_reached if rule.min_reached is not None else max(1, len(ref_runs) - 1)
    reached = sum(run_costs(r, target, hit=p.hit)[1] for r in ref_runs)
    curves = [[rec["robust_acc"] for rec in r["history"] if rec.get("robust_acc") is not None] for r in ref_runs]
    width = min(len(c) for c in curves)
    mean_curve = np.mean([c[len(c) - width:] for c in curves], axis=0)
    last = mean_curve[-rule.window:]
    spread = float(last.max() - last.min())
    why = []
    if reached < need:
        why.append(f"it reached its own target in {reached} of {len(ref_runs)} seeds, the rule needs {need}")
    if spread >= rule.max_move:
        why.append(f"its seed-mean robust accuracy moved {100 * spread:.1f} points over its last {rule.window} "
                   f"evaluations, the rule allows less than {100 * rule.max_move:.1f}")
    return {"reached": reached, "seeds": len(ref_runs), "min_reached": need, "spread": spread,
            "window": rule.window, "max_move": rule.max_move, "converged": not why, "why": "; ".join(why)}


def _speed_words(lo: float, hi: float) -> tuple[str, str]:
    """The words of a ratio's interval: against 1, and against the paper's [1/3, 1/2] (only when closed)."""
    if hi < 1:
        word = "faster"
    elif lo > 1:
        word = "slower"
    else:
        word = "no difference shown"
    a, b = PAPER_RANGE
    if lo == 0 or math.isinf(hi):
        paper = "open interval: nothing on the paper's range"
    elif hi < a:
        paper = "faster than the paper's range"
    elif lo > b:
        paper = "slower than the paper's range"
    elif a <= lo and hi <= b:
        paper = "within the paper's range"
    else:
        paper = "overlaps the paper's range"
    return word, paper


def _robust_words(lo: float, hi: float, margin: float) -> str:
    if -margin <= lo and hi <= margin:
        return "as robust"
    if lo > margin:
        return "more robust"
    if hi < -margin:
        return "less robust"
    if lo >= -margin:
        return "not less robust"
    return "inconclusive"


def _clip(iv: tuple[float, float, float], low: float, high: float) -> tuple[float, float, float]:
    """An interval of accuracies (or their differences) cut to the values they can take."""
    mean, lo, hi = iv
    return mean, max(lo, low), min(hi, high)


def _dirty(result: dict) -> bool:
    prov = result.get("provenance") or {}
    return bool(prov.get("library_dirty")) or str(prov.get("git_commit") or "").endswith("+dirty")


def _axis(p: ProtocolSpec, rows: list[tuple[float, bool]], refs: list[tuple[float, bool]]) -> dict:
    """One cost axis of a row against the reference: ERTs, their ratio (or a bound), per-seed ratios, interval."""
    e_row, k_row = ert(rows)
    e_ref, k_ref = ert(refs)
    if k_row == "=" and k_ref == "=":
        ratio, kind = e_row / e_ref, "="
    elif k_row == "=":
        ratio, kind = e_row / e_ref, "<="  # the reference's ERT exceeds its bound
    elif k_ref == "=":
        ratio, kind = e_row / e_ref, ">="
    else:
        ratio, kind = None, "?"
    per_seed = [seed_ratio(a, b) for a, b in zip(rows, refs)]
    lo, hi, level = sign_interval(per_seed, p.confidence)
    out = {"ert": e_row, "ert_kind": k_row, "ert_ref": e_ref, "ert_ref_kind": k_ref, "ratio": ratio,
           "ratio_kind": kind, "per_seed": per_seed, "interval": (lo, hi), "level": level}
    if k_row == ">=":
        out["speed"] = f"never reached the target in {len(rows)} seeds"
        out["paper"] = "no ERT, only its bound"
    elif lo == 0 and math.isinf(hi):
        out["speed"] = out["paper"] = "no interval: censored seeds leave it open on both sides"
    else:
        out["speed"], out["paper"] = _speed_words(lo, hi)
    return out


def verdict(protocol: ProtocolSpec | dict, runs: dict[int, dict[str, dict]]) -> dict:
    """Apply ``protocol`` to stored results ``runs[seed][run_name]``; return target, convergence, costs and verdicts.

    Every row has, per cost axis (``costs["passes"]``, ``costs["time"]``): the ERT, the ERT
    ratio to the reference (``ratio_kind`` ``=``, ``<=``, ``>=`` or ``?``), the per-seed
    :class:`Ratio` and the sign interval with its level; ``speed`` and ``paper`` are the words of
    the protocol's ``measure`` (``provisional`` when the reference did not converge).
    ``pgd``, ``autoattack`` and ``final_robust_acc`` are ``(mean, low, high)`` over seeds
    (Student t), ``pgd_diff``/``autoattack_diff`` the paired differences, ``robust`` their word.

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
    ref_runs = [runs[s][p.reference] for s in p.seeds]
    target = derive_target(p, ref_runs)
    conv = convergence(p, ref_runs, target)
    costs = {name: {m: [run_costs(runs[s][name], target, measure=m, hit=p.hit) for s in p.seeds] for m in MEASURES}
             for name in needed}
    rows = {}
    for name in needed:
        per_seed = []
        for i, s in enumerate(p.seeds):
            run = runs[s][name]
            rep = run.get("report") or {}
            per_seed.append({"seed": s, **{f"{m}_cost": costs[name][m][i][0] for m in MEASURES},
                             "reached": costs[name]["passes"][i][1], "final_robust_acc": final_robust_acc(run),
                             "pgd": rep.get("pgd"), "autoattack": rep.get("autoattack"), "cw": rep.get("cw"),
                             "clean": rep.get("clean"), "dirty": _dirty(run)})
        row: dict[str, Any] = {"per_seed": per_seed, "k_used": [r["steps"] for r in runs[p.seeds[0]][name]["history"]],
                               "reached": sum(r["reached"] for r in per_seed),
                               "dirty_seeds": [r["seed"] for r in per_seed if r["dirty"]]}
        for key in ("pgd", "autoattack", "final_robust_acc"):
            values = [r[key] for r in per_seed if r[key] is not None]
            if len(values) == len(per_seed):
                row[key] = _clip(t_interval(values, p.confidence), 0.0, 1.0)
        if name != p.reference:
            row["costs"] = {m: _axis(p, costs[name][m], costs[p.reference][m]) for m in MEASURES}
            head = row["costs"][p.measure]
            row["ratio"] = (head["ratio"], *head["interval"])
            if conv["converged"]:
                row["speed"], row["paper"] = head["speed"], head["paper"]
            else:
                row["speed"], row["paper"] = "provisional", f"the reference did not converge ({conv['why']})"
                for axis in row["costs"].values():
                    axis["speed"], axis["paper"] = row["speed"], row["paper"]
            ref_rows = {r["seed"]: r for r in rows[p.reference]["per_seed"]}
            for key in ("pgd", "autoattack"):
                diffs = [r[key] - ref_rows[r["seed"]][key] for r in per_seed
                         if r[key] is not None and ref_rows[r["seed"]][key] is not None]
                if len(diffs) == len(per_seed):
                    row[f"{key}_diff"] = _clip(t_interval(diffs, p.confidence), -1.0, 1.0)
            row["robust"] = (_robust_words(*row["pgd_diff"][1:], p.robust_margin) if "pgd_diff" in row
                             else "no final report")
        rows[name] = row
    return {"protocol": p.model_dump(), "target": target, "convergence": conv, "rows": rows}


def _interval(iv: tuple[float, float, float] | None, scale: float = 1.0, digits: int = 2, sign: str = "") -> str:
    if iv is None:
        return "-"
    mean, lo, hi = (v * scale for v in iv)
    return f"{mean:{sign}.{digits}f} [{lo:{sign}.{digits}f}, {hi:{sign}.{digits}f}]"


def _ratio_text(axis: dict) -> str:
    """``ERT ratio [interval]`` with bounds as bounds: ``0.52 [0.44, 0.57]``, ``>= 1.30 [1.05, inf]``, ``?``."""
    r, kind = axis["ratio"], axis["ratio_kind"]
    point = "?" if kind == "?" else (f"{r:.2f}" if kind == "=" else f"{kind} {r:.2f}")
    lo, hi = axis["interval"]
    if lo == 0 and math.isinf(hi):
        return f"{point} (no interval)"
    return f"{point} [{lo:.2f}, {'inf' if math.isinf(hi) else format(hi, '.2f')}]"


def format_verdict(v: dict) -> str:
    """The verdict as lines of text: target, convergence, then one line per row with both cost axes."""
    p, conv = v["protocol"], v["convergence"]
    n = len(p["seeds"])
    level = next((r["costs"][p["measure"]]["level"] for r in v["rows"].values() if "costs" in r), None)
    lines = [f"target: robust accuracy {100 * v['target']:.1f}% ({p['target']['rule']}"
             + (f", margin {100 * p['target']['margin']:.0f} points" if p["target"].get("margin") is not None else "")
             + f"); cost to the {p['hit']} epoch at the target, a run that never gets there censored at its "
             f"full cost; speed-up = ERT ratio (expected running time, Hansen et al.) on {p['measure']}, "
             + (f"{100 * level:.1f}% sign interval" if level is not None else "sign interval")
             + f" of the per-seed ratio; accuracies: mean [{round(100 * p['confidence'])}% t interval] over "
             f"{n} seeds",
             f"convergence of {p['reference']}: reached its target in {conv['reached']}/{n} seeds (needs "
             f"{conv['min_reached']}), seed-mean moved {100 * conv['spread']:.1f} points over the last "
             f"{conv['window']} evaluations (limit {100 * conv['max_move']:.1f}) -> "
             + ("converged" if conv["converged"] else "NOT converged: every speed-up below is provisional")]
    width = max(14, *(len(name) for name in v["rows"]))
    other = "time" if p["measure"] == "passes" else "passes"
    for name, row in v["rows"].items():
        line = (f"{name:>{width}}: reached {row['reached']}/{n}, final PGD {_interval(row.get('pgd'), 100, 1)}%")
        if "autoattack" in row:
            line += f", AutoAttack {_interval(row['autoattack'], 100, 1)}%"
        if name == p["reference"]:
            line += "  (reference)"
        else:
            head = row["costs"][p["measure"]]
            line += (f"; {p['measure']} {_ratio_text(head)} -> {row['speed']}"
                     + (f" ({row['paper']})" if row["speed"] != "provisional" else "")
                     + (f"; {other} {_ratio_text(row['costs'][other])}"
                        + ("" if row["speed"] == "provisional" else f" -> {row['costs'][other]['speed']}"))
                     + f"; PGD difference {_interval(row.get('pgd_diff'), 100, 1, '+')} points -> {row['robust']}")
        if row["dirty_seeds"]:
            line += f"  [made by uncommitted library code: seeds {row['dirty_seeds']}]"
        lines.append(line)
    if not conv["converged"]:
        lines.append(f"provisional: the reference did not converge ({conv['why']})")
    return "\n".join(lines)


def format_per_seed(v: dict, measure: str | None = None) -> str:
    """One line per seed: each row's cost to the target (``>`` for a censored run) and its ratio or bound."""
    p = v["protocol"]
    measure = measure or p["measure"]
    names = list(v["rows"])
    lines = [f"{measure} to the target ({100 * v['target']:.1f}%) per seed; '>' = never reached (the whole run's "
             f"cost); in brackets the ratio to {p['reference']}'s, a bound where one run was censored",
             "seed " + "".join(f"{n:>22s}" for n in names)]
    for i, s in enumerate(p["seeds"]):
        cells = []
        for n in names:
            row = v["rows"][n]["per_seed"][i]
            c = row[f"{measure}_cost"]
            text = (f"{c:,.0f}" if measure == "passes" else f"{c:,.1f}s")
            text = text if row["reached"] else "> " + text
            if n != p["reference"]:
                text += f" ({v['rows'][n]['costs'][measure]['per_seed'][i]})"
            cells.append(f"{text:>22s}")
        lines.append(f"{s:4d} " + "".join(cells))
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
