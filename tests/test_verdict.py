"""The verdict protocol: target rule, cost to target, paired bootstrap intervals, verdict words, and the CLI."""
import json
import math

import numpy as np
import pytest
import torch

from amata_lib.core import models
from amata_lib.experiments import CONFIG_DIR, ConfigError, experiment_verdict, load_config, row_spec
from amata_lib.infra.data import load
from amata_lib.infra.errors import UserError
from amata_lib.study.verdict import (
    ProtocolSpec,
    bootstrap_interval,
    cost_to_target,
    derive_target,
    format_per_seed,
    format_verdict,
    verdict,
)

PROTOCOL = {"seeds": [0, 1, 2], "reference": "pgd", "compare": ["amata"],
            "target": {"rule": "reference-final-minus", "margin": 0.02}}


def run(accs, passes_per_epoch, pgd=0.5, aa=None, warmup=None, steps=10):
    """A stored run: robust accuracy per epoch, a constant cost per epoch (time = passes / 100)."""
    history = [{"epoch": i + 1, "steps": steps, "robust_acc": a, "passes": passes_per_epoch * (i + 1),
                "time": passes_per_epoch * (i + 1) / 100} for i, a in enumerate(accs)]
    report = {"pgd": pgd, "autoattack": aa}
    if warmup:
        report["warmup"] = warmup
    return {"history": history, "report": report}


def test_bootstrap_interval_mean_and_ends():
    assert bootstrap_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    mean, lo, hi = bootstrap_interval([1.0, 2.0, 3.0, 4.0], resamples=20000)
    assert mean == 2.5 and 1.0 <= lo < 2.5 < hi <= 4.0
    # the ends are resampled means (order statistics, no interpolation): multiples of 1/4 here
    assert (4 * lo).is_integer() and (4 * hi).is_integer()
    # a wider spread gives a wider interval; the same seed gives the same interval
    assert bootstrap_interval([0.0, 2.0, 4.0, 6.0]) == bootstrap_interval([0.0, 2.0, 4.0, 6.0])
    narrow, wide = bootstrap_interval([2.0, 3.0]), bootstrap_interval([0.0, 5.0])
    assert wide[2] - wide[1] > narrow[2] - narrow[1]


def test_bootstrap_interval_with_inf_and_bad_input():
    mean, lo, hi = bootstrap_interval([0.5, 0.5, math.inf])
    assert mean == math.inf and lo == 0.5 and hi == math.inf
    with pytest.raises(UserError, match="NaN"):
        bootstrap_interval([0.5, float("nan")])
    with pytest.raises(UserError, match="at least one"):
        bootstrap_interval([])


def test_target_rules():
    refs = [run([0.3, 0.5], 10), run([0.3, 0.7], 10)]
    assert derive_target(ProtocolSpec.model_validate(PROTOCOL), refs) == pytest.approx(0.58)
    fixed = ProtocolSpec.model_validate(dict(PROTOCOL, target={"rule": "fixed", "value": 0.4}))
    assert derive_target(fixed, refs) == 0.4
    assert derive_target(ProtocolSpec.model_validate(PROTOCOL), [run([0.0, 0.01], 10)]) == 0.0  # not below 0


@pytest.mark.parametrize("target, match", [
    ({"rule": "fixed"}, "needs 'value'"),
    ({"rule": "fixed", "value": 0.4, "margin": 0.02}, "not 'margin'"),
    ({"rule": "reference-final-minus", "margin": 2}, "less than or equal to 1"),
    ({"rule": "median"}, "Input should be 'fixed'"),
])
def test_bad_target_is_refused(target, match):
    with pytest.raises(ValueError, match=match):
        ProtocolSpec.model_validate(dict(PROTOCOL, target=target))


def test_cost_to_target_first_stay_warmup_and_never():
    r = run([0.2, 0.6, 0.4, 0.7], 100, warmup={"passes": 30, "time": 0.3})
    assert cost_to_target(r, 0.5) == 200 + 30  # first epoch at the target, plus the warm-up
    assert cost_to_target(r, 0.5, hit="stay") == 400 + 30  # from epoch 4 on it stays above
    assert cost_to_target(r, 0.5, measure="time") == pytest.approx(2.3)
    assert cost_to_target(r, 0.9) == math.inf
    with pytest.raises(UserError, match="measure"):
        cost_to_target(r, 0.5, measure="flops")


def test_verdict_faster_and_within_the_papers_range():
    # Amata reaches 0.58 (= mean final 0.60 of the reference - 2 points) after 2 epochs of 45 passes,
    # the reference after 2 epochs of 100: ratio 0.45 on every seed; the reference has converged.
    runs = {s: {"pgd": run([0.3, 0.6, 0.6, 0.6], 100, pgd=0.50 + s / 100),
                "amata": run([0.3, 0.6, 0.6, 0.6], 45, pgd=0.51 + s / 100, steps=5)} for s in (0, 1, 2)}
    v = verdict(PROTOCOL, runs)
    row = v["rows"]["amata"]
    assert v["target"] == pytest.approx(0.58) and v["convergence"]["converged"]
    assert row["ratio"] == pytest.approx((0.45, 0.45, 0.45))
    assert row["costs"]["time"]["ratio"] == pytest.approx(0.45)  # seconds beside passes
    assert (row["speed"], row["paper"]) == ("faster", "within the paper's range")
    assert row["pgd_diff"] == pytest.approx((0.01, 0.01, 0.01)) and row["robust"] == "as robust"
    assert row["k_used"] == [5, 5, 5, 5] and row["reached"] == 3
    text = format_verdict(v)
    assert "target: robust accuracy 58.0%" in text and "passes 0.45 [0.45, 0.45] -> faster" in text
    assert "time 0.45 [0.45, 0.45] -> faster" in text and "-> converged" in text


def test_ert_and_per_seed_bounds_on_censored_histories():
    """COCO's ERT: every run's cost (to the target, or its whole run) over the runs that got there; a seed
    where one run never got there gives a bound, never 0 or inf posing as a ratio."""
    from amata_lib.study.verdict import Ratio, ert, run_costs, seed_ratio

    hit, miss = run([0.3, 0.6, 0.6], 100), run([0.3, 0.4, 0.5], 100)
    assert run_costs(hit, 0.58) == (200, True) and run_costs(miss, 0.58) == (300, False)
    assert ert([(200, True), (300, False), (100, True)]) == (300.0, "=")  # (200 + 300 + 100) / 2
    assert ert([(300, False), (300, False)]) == (600, ">=")  # no hit: a lower bound
    assert str(seed_ratio((50, True), (200, True))) == "0.25"
    assert str(seed_ratio((50, True), (300, False))) == "<= 0.17"  # the reference's true cost is above 300
    assert str(seed_ratio((300, False), (100, True))) == ">= 3.00"
    assert str(seed_ratio((300, False), (300, False))) == "?" and Ratio(None, "?").ends() == (0.0, math.inf)
    # three seeds: the reference misses in seed 2, Amata in none
    runs = {s: {"pgd": run([0.3, 0.6, 0.6, 0.6], 100), "amata": run([0.3, 0.6, 0.6, 0.6], 50)} for s in (0, 1)}
    runs[2] = {"pgd": run([0.3, 0.5, 0.5, 0.5], 100), "amata": run([0.3, 0.6, 0.6, 0.6], 50)}
    p = dict(PROTOCOL, convergence={"min_reached": 2, "window": 2, "max_move": 0.01})
    v = verdict(p, runs)
    axis = v["rows"]["amata"]["costs"]["passes"]
    target = v["target"]  # mean of 0.6, 0.6, 0.5 minus 2 points
    assert target == pytest.approx(0.5467, abs=1e-4)
    assert axis["ert"] == pytest.approx(100) and axis["ert_ref"] == pytest.approx((200 + 200 + 400) / 2)
    assert axis["ratio"] == pytest.approx(0.25) and axis["ratio_kind"] == "="
    assert [str(r) for r in axis["per_seed"]] == ["0.50", "0.50", "<= 0.25"]
    assert axis["interval"] == (0.0, 0.5)  # 3 seeds: k = 1, the censored seed's far end is 0
    assert "<= 0.25" in format_per_seed(v) and "> 400" in format_per_seed(v)


def test_a_reference_that_did_not_converge_makes_every_speed_up_provisional():
    runs = {s: {"pgd": run([0.3, 0.5, 0.6], 100), "amata": run([0.3, 0.6, 0.6], 45)} for s in (0, 1, 2)}
    v = verdict(PROTOCOL, runs)  # the seed-mean still rose 10 points over its last 3 evaluations
    assert not v["convergence"]["converged"] and "moved 30.0 points" in v["convergence"]["why"]
    row = v["rows"]["amata"]
    assert row["speed"] == "provisional" and all(a["speed"] == "provisional" for a in row["costs"].values())
    text = format_verdict(v)
    assert "provisional: the reference did not converge" in text and "faster" not in text
    missed = {s: {"pgd": run([0.6, 0.6, 0.6] if s else [0.3, 0.3, 0.3], 100), "amata": run([0.6] * 3, 45)}
              for s in (0, 1, 2)}
    p = dict(PROTOCOL, convergence={"min_reached": 3})
    conv = verdict(p, missed)["convergence"]
    assert not conv["converged"] and "reached its own target in 2 of 3 seeds, the rule needs 3" in conv["why"]


def test_sign_interval_levels_and_its_coverage_on_five_seeds():
    """The exact sign interval holds its level where the percentile bootstrap did not (measured, not assumed)."""
    from amata_lib.study.verdict import Ratio, sign_interval, sign_level, simulate_coverage

    assert sign_level(5, 1) == pytest.approx(0.9375) and sign_level(10, 2) == pytest.approx(0.978515625)
    ratios = [Ratio(v, "=") for v in (0.5, 0.4, 0.7, 0.6, 0.55)]
    assert sign_interval(ratios) == (0.4, 0.7, 0.9375)
    ten = [Ratio(v / 10, "=") for v in range(1, 11)]
    assert sign_interval(ten) == (0.2, 0.9, pytest.approx(0.978515625))
    for censor in (0.0, 0.2):
        assert simulate_coverage("sign", n=5, censor=censor) >= 0.93
        assert simulate_coverage("sign", n=10, censor=censor) >= 0.95
    assert simulate_coverage("bootstrap", n=5, trials=400) < 0.85  # why the bootstrap was replaced


def test_words_of_intervals():
    from amata_lib.study.verdict import _robust_words, _speed_words

    assert _speed_words(0.35, 0.45) == ("faster", "within the paper's range")
    assert _speed_words(0.40, 0.60) == ("faster", "overlaps the paper's range")
    assert _speed_words(0.20, 0.30)[1] == "faster than the paper's range"
    assert _speed_words(0.40, math.inf) == ("no difference shown", "open interval: nothing on the paper's range")
    assert _speed_words(1.1, 1.3) == ("slower", "slower than the paper's range")
    assert _robust_words(-0.01, 0.015, 0.02) == "as robust"
    assert _robust_words(0.03, 0.05, 0.02) == "more robust"
    assert _robust_words(-0.01, 0.05, 0.02) == "not less robust"
    assert _robust_words(-0.05, -0.03, 0.02) == "less robust"
    assert _robust_words(-0.05, 0.01, 0.02) == "inconclusive"


def test_results_of_uncommitted_code_are_marked():
    runs = {s: {"pgd": run([0.3, 0.6, 0.6, 0.6], 100), "amata": run([0.3, 0.6, 0.6, 0.6], 45)} for s in (0, 1, 2)}
    runs[1]["amata"]["provenance"] = {"git_commit": "abc", "library_dirty": True}
    runs[2]["amata"]["provenance"] = {"git_commit": "abc+dirty"}
    v = verdict(PROTOCOL, runs)
    assert v["rows"]["amata"]["dirty_seeds"] == [1, 2] and v["rows"]["pgd"]["dirty_seeds"] == []
    assert "[made by uncommitted library code: seeds [1, 2]]" in format_verdict(v)


def test_verdict_names_missing_results():
    runs = {0: {"pgd": run([0.6], 10), "amata": run([0.6], 5)}, 1: {"pgd": run([0.6], 10)}}
    with pytest.raises(UserError, match=r"amata \(seed 1\), pgd \(seed 2\), amata \(seed 2\)"):
        verdict(PROTOCOL, runs)


def _raw(name):
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["protocol"].update(reference="pgd-40"), r"protocol names runs \['pgd-40'\]"),
    (lambda c: c["protocol"].update(compare=["pgd-10"]), "must not contain the reference"),
    (lambda c: c.update(seed=3), "seed must be the protocol's first seed 0"),
    (lambda c: c["protocol"].update(seeds=[0, 0]), "seeds must differ"),
    (lambda c: c["protocol"].update(autoattack_standard_seeds=[11]), r"\[11\] are not among the seeds"),
    (lambda c: c["protocol"].update(verdict="faster"), "has unknown keys"),
])
def test_bad_protocol_in_a_config_names_the_field(tmp_path, edit, match):
    with pytest.raises(ConfigError, match=match):
        _load_edited(tmp_path, "digits-verdict", edit)


def _load_edited(tmp_path, name, edit):
    """load_config of shipped config ``name`` after ``edit`` changed its JSON."""
    raw = _raw(name)
    edit(raw)
    path = tmp_path / f"edited-{name}.json"
    path.write_text(json.dumps(raw))
    return load_config(str(path))


def test_shipped_protocols_fix_their_rules_before_any_run():
    for name in ("digits-verdict", "mnist-verdict-10k", "mnist-table1-protocol"):
        p = load_config(name)["protocol"]
        assert len(p["seeds"]) >= 5 and p["target"]["rule"] and p["measure"] in ("passes", "time"), name
    assert len(load_config("digits-verdict")["protocol"]["seeds"]) == 10
    table1 = load_config("mnist-table1-protocol")
    assert table1["protocol"]["reference"] == "pgd-40" and "train_subset" not in table1  # the paper's full scale


def test_warmup_is_the_same_for_every_row_of_a_seed():
    """Every row of a seed starts from the same weights after the shared clean warm-up: ERM at a constant rate."""
    from amata_lib import TrainOptions, train

    train_set, test_set = load("digits")
    cfg = dict(load_config("digits-verdict"), warmup={"epochs": 1})
    specs = [row_spec(cfg, row) for row in cfg["runs"][:2]]
    clean = [s.warmup_spec() for s in specs]
    assert clean[0].model_copy(update={"run": clean[1].run}) == clean[1] and clean[0].run.method == "erm"
    assert clean[0].epochs == 1 and clean[0].lr_schedule == "constant" and clean[0].warmup is None
    states = []
    for c in clean:
        torch.manual_seed(c.seed)
        model = models.build(c.model)
        history = train(model, train_set, test_set, eps=c.eps, epochs=c.epochs, options=c.options(), seed=c.seed)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        assert isinstance(c.options(), TrainOptions) and history[-1]["passes"] == int(np.ceil(len(train_set) / 128))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    torch.manual_seed(0)
    assert not torch.equal(models.build("digits_cnn").conv1.weight, states[0]["conv1.weight"])  # it trained


@pytest.mark.slow
def test_protocol_experiment_runs_every_seed_and_prints_the_verdict(tmp_path, cli_main):
    """`python -m amata_lib experiment CONFIG` runs each seed of the protocol, then prints the verdict,
    and `--verdict` reprints it from the stored results without training."""
    raw = _raw("digits-verdict")
    raw.update(name="tiny-verdict", epochs=2, warmup={"epochs": 1})
    raw["runs"] = raw["runs"][:2]
    raw["protocol"].update(seeds=[0, 1], compare=["amata-2-10"], autoattack_standard_seeds=[])
    raw["eval"].update(subset=40, autoattack_n=20, pgd_steps=3, cw_steps=3, pgd_restarts=1)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(raw))
    args = ["experiment", str(config), "--train-subset", "256",
            "--out-dir", str(tmp_path / "res"), "--checkpoint-dir", str(tmp_path / "ck"), "--allow-dirty"]
    first = cli_main(*args)
    assert first.returncode == 0, first.stderr
    assert "seed 1 (2 of 2)" in first.stdout and "target: robust accuracy" in first.stdout
    assert sorted(p.parent.name + "/" + p.name for p in (tmp_path / "res").rglob("*.json")) == [
        "seed0/amata-2-10.json", "seed0/pgd-10.json", "seed1/amata-2-10.json", "seed1/pgd-10.json"]
    assert {p.parent.parent.name for p in (tmp_path / "res").rglob("*.json")} == {"tiny-verdict-reduced"}
    stored = json.loads((tmp_path / "res/tiny-verdict-reduced/seed0/pgd-10.json").read_text())
    assert stored["report"]["warmup"]["epochs"] == 1 and stored["config"]["protocol"]["seeds"] == [0, 1]
    again = cli_main(*args, "--verdict")
    assert again.returncode == 0, again.stderr
    v = experiment_verdict(str(config), train_subset=256, out_dir=tmp_path / "res")
    assert again.stdout.strip() == format_verdict(v)
    assert format_verdict(v) in first.stdout


def test_planned_passes_count_schedule_warmup_and_evaluations():
    from amata_lib.estimate import estimate, planned_passes
    cfg = load_config("mnist-verdict-10k")
    rows = planned_passes(cfg)
    batches = math.ceil(10000 / 64)
    assert rows["pgd-10"]["train"] == 5 * batches * (1 + 16 * 11)  # warm-up + 16 epochs of K + 1 passes
    amata_cost = sum(round(2 + 8 * t / 16 + 1e-9) + 1 for t in range(16))  # round half up, as the schedule
    assert rows["amata-2-10"]["train"] == 5 * batches * (1 + amata_cost)
    # per seed: 16 evaluations of PGD-20 on 1,000 images, then PGD-20 and CW-20 with 2 restarts on 1,000
    assert rows["pgd-2"]["eval"] == pytest.approx(5 * (16 * 1000 * 21 + 1000 * 2 * 42) / 64)
    est = estimate(cfg, 0.01)
    assert est["rows"]["pgd-10"]["hours"] == pytest.approx((rows["pgd-10"]["train"] + rows["pgd-10"]["eval"])
                                                           * 0.01 / 3600)


def test_estimate_from_the_command_line(tmp_path, cli_main):
    out = cli_main("experiment", "digits-verdict", "--estimate", "--device", "cpu", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "10 seed(s); one pass measured at" in lines[0] and len(lines) == 1 + 4 + 1
    assert lines[-1].strip().startswith("total:") and not list(tmp_path.iterdir())  # nothing written


def test_autoattack_standard_only_for_the_protocols_seeds(monkeypatch):
    import amata_lib.spec as spec
    seen = []
    monkeypatch.setattr(spec, "robustness_report", lambda *a, **k: seen.append(
        (k["autoattack_version"], k["autoattack_attacks"])) or {})
    cfg = load_config("digits-verdict")
    standard = cfg["protocol"]["autoattack_standard_seeds"]
    reports = [spec.report(row_spec(dict(cfg, seed=seed), cfg["runs"][0]), None, list(range(10)),
                           standard_autoattack=seed in standard) for seed in (0, 1)]
    assert seen == [("standard", None), ("custom", ["apgd-ce", "apgd-dlr"])]
    assert [r["autoattack_attacks"] for r in reports] == ["standard", ["apgd-ce", "apgd-dlr"]]


def test_config_train_subset_and_warmup_are_stored_only_when_given():
    digits = load_config("digits-verdict")
    mnist = load_config("mnist-verdict-10k")
    assert "train_subset" not in digits and "warmup" not in digits
    assert mnist["train_subset"] == 10000 and mnist["warmup"] == {"epochs": 1}
    assert "protocol" not in load_config("digits-smoke")  # older configs keep matching their stored results


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(eps=0.3), r"'digits-verdict' has other settings \(eps: 0.2 -> 0.3\)"),
    (lambda c: c["eval"].update(pgd_steps=10), r"other settings \(eval.pgd_steps: 20 -> 10\)"),
    (lambda c: c["protocol"].update(autoattack_standard_seeds=[]), "autoattack_standard_seeds"),
    (lambda c: c["borrow"]["runs"].append("pgd-40"), r"'digits-verdict' has no runs \['pgd-40'\]"),
    (lambda c: c["borrow"].update(experiment="nope"), "unknown experiment 'nope'"),
    (lambda c: c["borrow"].update(runs=["adaptive"]), r"runs \['adaptive'\] are both borrowed and run here"),
    (lambda c: c["borrow"].update(runs=["amata-2-10"]),
     r"protocol names runs \['pgd-10', 'pgd-2'\] that are not in runs or borrow.runs"),
])
def test_borrowed_rows_need_the_lenders_settings(tmp_path, edit, match):
    """An experiment may read rows from another's stored results only when every shared setting agrees."""
    with pytest.raises(ConfigError, match=match):
        _load_edited(tmp_path, "digits-adaptive", edit)


@pytest.mark.slow
def test_borrowed_rows_are_trained_by_the_lender_and_read_back(tmp_path):
    """A missing borrowed row is trained under the lender's name, into its folder; the verdict pairs it
    with the borrower's own rows seed by seed; a copy of it in the borrower's folder is refused."""
    from amata_lib.experiments import ResultError, experiment_runs, run_experiment
    lender_raw = _raw("digits-verdict")
    lender_raw.update(name="tiny-lender", epochs=2)
    lender_raw["runs"] = [r for r in lender_raw["runs"] if r["name"] in ("pgd-10", "pgd-2")]
    lender_raw["protocol"].update(seeds=[0, 1], compare=["pgd-2"], autoattack_standard_seeds=[])
    lender_raw["eval"].update(subset=40, autoattack_n=20, pgd_steps=3, cw_steps=3, pgd_restarts=1)
    lender_path = tmp_path / "lender.json"
    lender_path.write_text(json.dumps(lender_raw))
    raw = dict(lender_raw, name="tiny-borrower", borrow={"experiment": str(lender_path), "runs": ["pgd-10"]},
               runs=[_raw("digits-verdict")["runs"][1]])  # amata-2-10
    raw["protocol"] = dict(lender_raw["protocol"], compare=["amata-2-10"])
    path = tmp_path / "borrower.json"
    path.write_text(json.dumps(raw))
    lines = []
    kwargs = dict(train_subset=256, out_dir=tmp_path / "res", checkpoint_dir=tmp_path / "ck", allow_dirty=True)
    run_experiment(str(path), log=lines.append, **kwargs)
    files = sorted(str(p.relative_to(tmp_path / "res")) for p in (tmp_path / "res").rglob("*.json"))
    assert files == ["tiny-borrower-reduced/seed0/amata-2-10.json", "tiny-borrower-reduced/seed1/amata-2-10.json",
                     "tiny-lender-reduced/seed0/pgd-10.json", "tiny-lender-reduced/seed1/pgd-10.json"]
    stored = json.loads((tmp_path / "res/tiny-lender-reduced/seed0/pgd-10.json").read_text())
    assert stored["config"]["experiment"] == "tiny-lender"
    assert stored["provenance"]["command"].startswith(f"python -m amata_lib experiment {lender_path} --runs pgd-10")
    assert any("borrowed from experiment" in line for line in lines)
    runs = experiment_runs(str(path), train_subset=256, out_dir=tmp_path / "res")
    assert sorted(runs) == [0, 1] and all(sorted(r) == ["amata-2-10", "pgd-10"] for r in runs.values())
    assert runs[1]["pgd-10"]["history"] == json.loads(
        (tmp_path / "res/tiny-lender-reduced/seed1/pgd-10.json").read_text())["history"]
    assert "target: robust accuracy" in lines[-1]  # the verdict, over own and borrowed rows
    again = []
    run_experiment(str(path), log=again.append, **kwargs)  # nothing left to train
    assert sum("done already" in line for line in again) == 4
    copy = tmp_path / "res/tiny-borrower-reduced/seed0/pgd-10.json"
    copy.write_text((tmp_path / "res/tiny-lender-reduced/seed0/pgd-10.json").read_text())
    with pytest.raises(ResultError, match=r"holds another run than its place says \(experiment 'tiny-lender', "
                                          r"not 'tiny-borrower'\)"):
        experiment_runs(str(path), train_subset=256, out_dir=tmp_path / "res")
    stored = json.loads(copy.read_text())  # a row of its own under the borrowed name is refused too
    stored["config"]["experiment"] = "tiny-borrower"
    copy.write_text(json.dumps(stored))
    with pytest.raises(ResultError, match=r"holds rows \['pgd-10'\] that experiment 'tiny-borrower' borrows"):
        experiment_runs(str(path), train_subset=256, out_dir=tmp_path / "res")


def test_a_shipped_lender_is_recorded_as_its_config_file(tmp_path):
    """digits-adaptive's borrowed rows are digits-verdict's: trained under its name and config file when
    missing, found again afterwards (seed 1, a reduced scale, the borrowed row only)."""
    from amata_lib.experiments import run_experiment
    kwargs = dict(runs=["pgd-2"], train_subset=64, epochs=1, eval_subset=20, autoattack_n=10, seed=1,
                  out_dir=tmp_path / "res", checkpoint_dir=tmp_path / "ck", allow_dirty=True)
    lines = []
    (path,) = run_experiment("digits-adaptive", log=lines.append, **kwargs)
    assert path.parent.parent.name == "digits-verdict-reduced" and path.parent.name == "seed1"
    assert path.name == "pgd-2.json"
    stored = json.loads(path.read_text())
    assert stored["config"]["config_file"] == "amata_lib/configs/digits-verdict.json"
    assert stored["config"]["experiment"] == "digits-verdict"
    again = []
    assert run_experiment("digits-adaptive", log=again.append, **kwargs) == [path]
    assert any("done already" in line for line in again)


def test_scorecard_verdicts_follow_the_evidence():
    """The scorecard's words come from the verdicts by its rules: faster and as robust within the range holds,
    a provisional reference gives provisional, a slower row is not reproduced."""
    from amata_lib.study.scorecard import pmp_claim, speed_claim

    good = {s: {"pgd-10": run([0.3, 0.6, 0.6, 0.6], 100), "amata-2-10": run([0.3, 0.6, 0.6, 0.6], 45)}
            for s in (0, 1, 2)}
    proto = dict(PROTOCOL, reference="pgd-10", compare=["amata-2-10"])
    assert speed_claim({"x": verdict(proto, good)}, headline="x").verdict == "holds"
    rising = {s: {"pgd-10": run([0.3, 0.5, 0.6], 100), "amata-2-10": run([0.3, 0.6, 0.6], 45)} for s in (0, 1, 2)}
    assert speed_claim({"x": verdict(proto, rising)}, headline="x").verdict == "provisional"
    slow = {s: {"pgd-10": run([0.3, 0.6, 0.6, 0.6], 100), "amata-2-10": run([0.3, 0.6, 0.6, 0.6], 150)}
            for s in (0, 1, 2)}
    assert speed_claim({"x": verdict(proto, slow)}, headline="x").verdict.startswith("not reproduced (slower")
    assert pmp_claim().verdict == "holds"


def test_scorecard_claims_name_the_chapter_that_judges_them():
    """Each claim's chapter column names a chapter of the book; the adaptive claim is judged in chapter 10,
    not in the criterion chapter it was split from (the scorecard once overrode the library's wrong name)."""
    from pathlib import Path

    from amata_lib.study.scorecard import adaptive_claim, pmp_claim, speed_claim

    book = Path(__file__).resolve().parents[1] / "book"
    proto = dict(PROTOCOL, reference="pgd-10", compare=["adaptive", "amata-2-10"])
    seeds = {s: {"pgd-10": run([0.3, 0.6, 0.6, 0.6], 100), "adaptive": run([0.3, 0.6, 0.6, 0.6], 60),
                 "amata-2-10": run([0.3, 0.6, 0.6, 0.6], 45)} for s in (0, 1, 2)}
    claims = [adaptive_claim({"x": verdict(proto, seeds)}), speed_claim({"x": verdict(proto, seeds)}, headline="x"),
              pmp_claim()]
    assert claims[0].where == "10_adaptive_amata"
    assert all((book / f"{c.where}.ipynb").exists() for c in claims), [c.where for c in claims]
