import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amata_lib.cli import main
from amata_lib.core.maximizers import FATMaximizer, FOSCMaximizer, PGDMaximizer
from amata_lib.experiments import (
    CONFIG_DIR,
    ConfigError,
    available,
    build_run_maximizer,
    build_schedule,
    command_line,
    folder_name,
    is_reduced,
    load_config,
    load_results,
    run_record_config,
    seed_folder,
    summary,
    with_overrides,
)
from amata_lib.infra.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["experiment", "digits-smoke", "--runs", "pgd-5,amata-2-5", "--epochs", "3", "--train-subset", "400",
         "--eval-subset", "60", "--autoattack-n", "30"]
HISTORY_KEYS = ("epoch", "steps", "alpha", "passes", "train_loss", "clean_acc", "robust_acc")


def test_shipped_configs_validate_and_build():
    assert {"mnist-table1", "mnist-baselines", "cifar10-table2", "digits-smoke"} <= set(available())
    for name in available():
        cfg = load_config(name)
        assert cfg["name"] == name and cfg["choices"], name
        for run in cfg["runs"]:
            build_schedule(run, cfg["epochs"])
            build_run_maximizer(run, cfg["eps"])


def test_mnist_table1_is_the_papers_table_with_recorded_choices():
    cfg = load_config("mnist-table1")
    assert (cfg["dataset"], cfg["model"], cfg["eps"]) == ("mnist", "lenet", 0.3)
    assert [r["name"] for r in cfg["runs"]] == ["pgd-10", "pgd-20", "pgd-40", "amata-5-40", "amata-10-40"]
    plans = {r["name"]: build_schedule(r, cfg["epochs"]).plans() for r in cfg["runs"]}
    assert {p.alpha for p in plans["pgd-10"]} == {0.01}
    amata = plans["amata-5-40"]
    assert [p.steps for p in amata] == [5, 9, 12, 16, 19, 23, 26, 30, 33, 37]
    assert all(abs(p.steps * p.alpha - 0.4) < 1e-12 for p in amata)  # tau = alpha * K_max
    assert any("tau" in c for c in cfg["choices"])


def test_cifar10_fractions_and_maximizers():
    cfg = load_config("cifar10-table2")
    assert cfg["eps"] == pytest.approx(8 / 255)
    runs = {r["name"]: r for r in cfg["runs"]}
    assert runs["amata-2-10"]["tau"] == pytest.approx(20 / 255)
    assert isinstance(build_run_maximizer(runs["fosc"], cfg["eps"]), FOSCMaximizer)
    assert isinstance(build_run_maximizer(runs["fat"], cfg["eps"]), FATMaximizer)
    assert isinstance(build_run_maximizer(runs["pgd-10"], cfg["eps"]), PGDMaximizer)


def _raw(name="digits-smoke"):
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


def _edit(raw, path, value):
    *keys, last = path
    node = raw
    for k in keys:
        node = node[k]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return raw


@pytest.mark.parametrize("path, value, match", [
    (("eps",), KeyError, "field 'config' lacks ['eps']"),
    (("eps",), -0.1, "field 'eps': Input should be greater than or equal to 0, got -0.1"),
    (("eps",), "8/zero", "field 'eps': must be a number or a fraction like '8/255', got '8/zero'"),
    (("epochs",), 2.5, "field 'epochs': Input should be a valid integer, got 2.5"),
    (("optimizer",), "rmsprop", "field 'optimizer': Input should be 'sgd' or 'adam', got 'rmsprop'"),
    (("learning_rate",), 0.1, "field 'config' has unknown keys ['learning_rate']"),
    (("eval", "pgd_steps"), 0, "field 'eval.pgd_steps': Input should be greater than or equal to 1, got 0"),
    (("eval", "autoattack_attacks"), ["apgd-xx"], "field 'eval.autoattack_attacks[0]': Input should be 'apgd-ce'"),
    (("runs",), [], "field 'runs': List should have at least 1 item"),
    (("runs", 1, "method"), "adam", "field 'runs[1].method': Input should be 'erm', 'pgd'"),
    (("runs", 1, "alpha"), KeyError, "field 'runs[1]': lacks ['alpha'] (method 'pgd')"),
    (("runs", 2, "k_min"), 9, "field 'runs[2]': k_min must be <= k_max, got 9 > 5"),
    (("runs", 2, "maximizer"), "fgsm", "field 'runs[2].maximizer': Input should be 'atta'"),
    (("runs", 0, "maximizer"), "pgd", "field 'runs[0]': method 'erm' trains on clean data, got maximizer 'pgd'"),
    (("runs", 1, "name"), "erm", "field 'runs' has duplicate names ['erm']"),
    (("runs", 1, "name"), "../x", "field 'runs[1].name': String should match pattern"),
])
def test_bad_config_names_the_field(tmp_path, path, value, match):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_edit(_raw(), path, value)))
    with pytest.raises(ConfigError, match=r".*bad\.json: " + re.escape(match)):
        load_config(str(bad))


def test_overrides_mark_results_reduced_and_reanneal():
    cfg = load_config("mnist-table1")
    same, none = with_overrides(cfg, epochs=cfg["epochs"])
    assert none == {} and same == cfg
    small, changed = with_overrides(cfg, train_subset=3000, epochs=5, eval_subset=300)
    assert changed == {"train_subset": 3000, "epochs": 5, "eval_subset": 300}
    assert small["eval"]["subset"] == 300 and cfg["eval"]["subset"] is None  # the original is untouched
    amata = next(r for r in small["runs"] if r["name"] == "amata-5-40")
    assert [p.steps for p in build_schedule(amata, small["epochs"]).plans()] == [5, 12, 19, 26, 33]
    assert command_line("mnist-table1", overrides=changed, data_path="/d/mnist.npz") == (
        "python -m amata_lib experiment mnist-table1 --train-subset 3000 --epochs 5 --eval-subset 300 "
        "--data-path /d/mnist.npz")
    with pytest.raises(ValueError, match="train_subset must be an integer >= 1, got 0"):
        with_overrides(cfg, train_subset=0)


def test_seed_override_is_a_repetition_not_a_reduction():
    cfg = load_config("digits-plus")
    same, none = with_overrides(cfg, seed=cfg["seed"])
    assert none == {} and folder_name(same, none) == "digits-plus"
    assert seed_folder("res", same, none) == Path("res/digits-plus/seed0")
    other, changed = with_overrides(cfg, seed=3)
    assert changed == {"seed": 3} and other["seed"] == 3 and cfg["seed"] == 0
    assert folder_name(other, changed) == "digits-plus" and not is_reduced(changed)
    assert seed_folder("res", other, changed) == Path("res/digits-plus/seed3")
    run = other["runs"][0]
    assert run_record_config(other, run, changed, "x.json")["reduced"] is False
    both, changed = with_overrides(cfg, epochs=3, seed=3)
    assert folder_name(both, changed) == "digits-plus-reduced" and is_reduced(changed)
    assert seed_folder("res", both, changed) == Path("res/digits-plus-reduced/seed3")
    assert command_line("digits-plus", overrides=changed).endswith("--epochs 3 --seed 3")
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        with_overrides(cfg, seed=-1)


@pytest.mark.parametrize("args, match", [
    (["experiment", "nonsense"], "unknown experiment 'nonsense'; available: cifar10-table2"),
    (["experiment", "digits-smoke", "--runs", "pgd-5,pgd-7"], "runs ['pgd-7'] are not in experiment"),
    (["experiment"], "give an experiment NAME or --list"),
    (["experiment", "missing.json"], "config file 'missing.json' does not exist"),
    (["experiment", "digits-smoke", "--verdict"], "experiment 'digits-smoke' has no protocol"),
    (["experiment", "digits-verdict", "--verdict", "--out-dir", "empty"],
     "the protocol needs results that are not stored: pgd-10 (seed 0), amata-2-10 (seed 0)"),
])
def test_experiment_mistakes_give_one_line(tmp_path, monkeypatch, capsys, args, match):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1


def test_list_and_bad_config_file_via_cli(tmp_path, capsys, cli_main):
    assert main(["experiment", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "mnist-table1 (version 1): mnist, lenet, eps 0.3, 10 epochs; runs: pgd-10, pgd-20, pgd-40" in listed
    assert len(listed.strip().splitlines()) == len(available())
    (tmp_path / "bad.json").write_text(json.dumps(_edit(_raw(), ("runs", 2, "k_max"), 0)))
    bad = cli_main("experiment", "bad.json", cwd=tmp_path)
    assert bad.returncode == 2
    assert "field 'runs[2].k_max': Input should be greater than or equal to 1, got 0" in bad.stderr
    assert "Traceback" not in bad.stderr


def _histories(folder):
    return {p.stem: [[r[k] for k in HISTORY_KEYS] for r in json.loads(p.read_text())["history"]]
            for p in sorted(folder.glob("*.json"))}


@pytest.mark.slow
def test_kill_9_resume_skip_and_stored_result(tmp_path, monkeypatch, capsys, cli_main, one_thread):
    """The reference and the resume run in this process; the run killed with SIGKILL is a real process."""
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "kill"
    ref_dir.mkdir(), kill_dir.mkdir()
    ref = cli_main(*SMOKE, cwd=ref_dir)
    assert ref.returncode == 0, ref.stderr
    results = ref_dir / "data" / "results" / "digits-smoke-reduced" / "seed0"

    env = one_thread
    ckpt = kill_dir / "data" / "checkpoints" / "digits-smoke-reduced" / "seed0" / "pgd-5.pt"
    proc = subprocess.Popen([sys.executable, "-m", "amata_lib", *SMOKE], cwd=kill_dir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint appeared before the kill"
    assert not (kill_dir / "data" / "results" / "digits-smoke-reduced" / "seed0" / "pgd-5.json").exists()
    resumed = cli_main(*SMOKE, cwd=kill_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "[pgd-5] resuming from" in resumed.stdout
    killed = kill_dir / "data" / "results" / "digits-smoke-reduced" / "seed0"
    assert _histories(killed) == _histories(results) and len(_histories(results)) == 2
    for name in ("pgd-5", "amata-2-5"):
        a, b = (json.loads((d / f"{name}.json").read_text()) for d in (results, killed))
        assert a["report"] == b["report"]
    assert not ckpt.exists()  # removed once the result is written

    monkeypatch.chdir(kill_dir)
    assert main(SMOKE) == 0
    assert capsys.readouterr().out.count("done already") == 2

    run = json.loads((results / "amata-2-5.json").read_text())
    cfg = run["config"]
    assert (cfg["experiment"], cfg["version"], cfg["reduced"]) == ("digits-smoke", 1, True)
    assert cfg["overrides"] == {"train_subset": 400, "epochs": 3, "eval_subset": 60, "autoattack_n": 30}
    assert cfg["train_size"] == 400 and cfg["eval_size"] == 60 and cfg["schedule"].startswith("Amata(k_min=2")
    assert run["provenance"]["command"] == (
        "python -m amata_lib experiment digits-smoke --runs pgd-5,amata-2-5 --train-subset 400 --epochs 3 "
        "--eval-subset 60 --autoattack-n 30")
    assert [h["steps"] for h in run["history"]] == [2, 3, 4]
    report = run["report"]
    assert report["n"] == 30 and 0 <= report["autoattack"] <= report["clean"] <= 1
    assert isinstance(report["gradient_masking_suspect"], bool)

    rows = [summary(r) for r in load_results(results, load_config("digits-smoke"))]
    assert [r["run"] for r in rows] == ["pgd-5", "amata-2-5"]  # the config's order
    assert rows[1]["passes"] == run["history"][-1]["passes"] and rows[1]["pgd"] == report["pgd"]

    monkeypatch.chdir(ref_dir)
    assert main(SMOKE[:-1] + ["20"]) == 2  # same folder, different settings: refused
    err = capsys.readouterr().err
    assert "holds a finished run with other settings (eval.autoattack_n: 30 -> 20; overrides.autoattack_n" in err


def test_plus_configs_pair_each_method_with_its_amata_change():
    from amata_lib.methods import ATTAMaximizer, FastMaximizer, FreeMaximizer, YOPOMaximizer
    for name, eps in (("mnist-plus", 0.3), ("digits-plus", 0.2)):
        cfg = load_config(name)
        assert cfg["eps"] == eps
        runs = {r["name"]: r for r in cfg["runs"]}
        plans = {n: build_schedule(r, cfg["epochs"]).plans() for n, r in runs.items()}
        free = plans["amata-free-2-4"]  # m 2 -> 4, step eps -> eps / 2
        assert (free[0].steps, free[-1].steps) == (2, 4)
        assert (free[0].alpha, free[-1].alpha) == pytest.approx((eps, eps / 2))
        assert {p.alpha for p in plans["free-4"]} == {eps}
        assert isinstance(build_run_maximizer(runs["free-4"], eps), FreeMaximizer)
        fast, amata_fast = (build_run_maximizer(runs[n], eps) for n in ("fast", "amata-fast"))
        assert isinstance(fast, FastMaximizer) and fast.weak_fraction == 0 and amata_fast.weak_fraction > 0
        assert runs["fast"]["detect_overfitting"] and {p.alpha for p in plans["fast"]} == {1.25 * eps}
        yopo_name = [n for n in runs if n.startswith("yopo-")][0]
        yopo = build_run_maximizer(runs[yopo_name], eps)
        assert isinstance(yopo, YOPOMaximizer) and yopo.layer == "relu1"
        assert yopo.grad_reduction == "mean"
        # the cheap steps' reach (m - 1) n sigma grows with m_t up to plain YOPO's, and sigma ends at YOPO's
        travel = {run: [(p.steps - 1) * yopo.n * p.alpha for p in plans[run]] for run in (yopo_name, "amata-yopo-2-5")}
        assert travel["amata-yopo-2-5"] == sorted(travel["amata-yopo-2-5"])
        assert travel["amata-yopo-2-5"][-1] == pytest.approx(travel[yopo_name][-1], rel=2e-3)
        assert plans["amata-yopo-2-5"][-1].alpha == pytest.approx(plans[yopo_name][-1].alpha, rel=1e-2)
        atta = build_run_maximizer(runs["amata-atta-1"], eps)
        assert isinstance(atta, ATTAMaximizer)
        assert [atta.reset_period(t) for t in range(7)] == [2] * 5 + [None] * 2
        assert [t + 1 for t in range(cfg["epochs"]) if atta.resets_before(t)] == [2, 4]  # then never (their MNIST)
        fast = [r for r in cfg["runs"] if r["maximizer"] == "fast"]
        assert fast and all(r["lr_schedule"] == "cyclic" and r["early_stop"]["drop"] == 0.2 for r in fast)


@pytest.mark.parametrize("field, value, match", [
    ("maximizer_kwargs", {"reset": 0}, r"field 'runs\[8\].maximizer_kwargs': reset must be an integer >= 1"),
    ("maximizer_kwargs", {"m": 4}, r"field 'runs\[8\].maximizer_kwargs': maximizer 'atta' has no parameter 'm'"),
    ("detect_overfitting", "yes", r"field 'runs\[8\].detect_overfitting': Input should be a valid boolean, got 'yes'"),
    ("maximizer_kwargs", {"reset": 10, "early_reset": 2}, r"early_reset=2 has no effect with early_epochs=0"),
])
def test_bad_plus_run_names_the_field(tmp_path, field, value, match):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_edit(_raw("digits-plus"), ("runs", 8, field), value)))
    with pytest.raises(ConfigError, match=match):
        load_config(str(bad))


def test_plus_experiment_runs_and_records_overfitting_checks(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["experiment", "digits-plus", "--runs", "amata-fast,amata-yopo-2-5", "--epochs", "2",
            "--train-subset", "300", "--eval-subset", "50", "--autoattack-n", "20"]
    assert main(args) == 0
    folder = tmp_path / "data" / "results" / "digits-plus-reduced" / "seed0"
    fast = json.loads((folder / "amata-fast.json").read_text())
    assert all(0 <= h["fgsm_acc"] <= 1 and h["catastrophic_overfitting"] is False for h in fast["history"])
    assert fast["history"][-1]["passes"] == 2 * 3 * 2  # (FGSM + training) x 3 minibatches x 2 epochs
    yopo = json.loads((folder / "amata-yopo-2-5.json").read_text())
    # Amata(2, 5) over 2 epochs: K = 2, then 3.5 rounded half up to 4; m full passes per minibatch
    assert [h["steps"] for h in yopo["history"]] == [2, 4] and yopo["history"][-1]["passes"] == 3 * (2 + 4)
    assert "fgsm_acc" not in yopo["history"][0]
    assert "FGSM" in capsys.readouterr().out
    # the Fast runs: cyclic lr per minibatch (3 per epoch; 2 epochs peak at 2 * 2 // 5 = 0: the rate falls
    # from the start, 1 - t / 2 at t = (k + 1) / 3 for the next minibatch k = 3, then 0)
    # and early stopping's PGD accuracy in every record
    assert [h["lr"] for h in fast["history"]] == pytest.approx([0.05 / 3, 0.0])
    assert all(0 <= h["early_stop_acc"] <= 1 for h in fast["history"])


def test_report_table_lists_every_run_with_its_overfitting_flag():
    from amata_lib.core.history import overfitting_epochs
    from amata_lib.experiments import report_table

    def run(name, fgsm):
        history = [{"epoch": e, "time": e, "passes": 10 * e, "robust_acc": 0.5 if e < 3 else 0.05,
                    "fgsm_acc": fgsm} for e in (1, 2, 3)]
        return {"run": name, "history": history,
                "report": {"clean": 0.9, "pgd": 0.05, "cw": 0.04, "autoattack": None}}
    results = {"fast": run("fast", 0.9), "pgd-10": run("pgd-10", None)}
    assert overfitting_epochs(results["fast"]["history"]) == [3]
    assert overfitting_epochs(results["pgd-10"]["history"]) is None
    lines = report_table(results, attack="PGD-20").splitlines()
    assert lines[0].split()[:3] == ["run", "clean", "PGD-20"]
    assert lines[1].split() == ["fast", "90.0%", "5.0%", "4.0%", "n/a", "30", "from", "epoch", "3"]
    assert lines[2].endswith("  -")


def test_results_live_in_one_folder_per_experiment_and_the_old_layout_is_named(tmp_path):
    """seed<N>/ folders under the experiment; an old-layout folder gives one error naming the new place and
    the script; the migration moves bytes only; a moved file's old path says where it went."""
    import shutil

    from amata_lib.experiments import experiment_runs
    from amata_lib.infra.results import ResultError, load_run

    stored = ROOT / "data" / "results" / "digits-verdict"
    old = tmp_path / "res"
    for s in range(10):
        folder = old / ("digits-verdict" if s == 0 else f"digits-verdict-seed{s}")
        shutil.copytree(stored / f"seed{s}", folder)
    with pytest.raises(ResultError, match=r"old results layout; results now live in .*digits-verdict/seed<N>"
                                          r"/<run>.json: move them with 'python scripts/migrate_results.py"):
        experiment_runs("digits-verdict", out_dir=old)
    moved = subprocess.run([sys.executable, str(ROOT / "scripts" / "migrate_results.py"), str(old)],
                           capture_output=True, text=True, timeout=60)
    assert moved.returncode == 0, moved.stderr
    assert "40 file(s) moved" in moved.stdout
    for s in range(10):
        for f in (stored / f"seed{s}").glob("*.json"):
            assert (old / "digits-verdict" / f"seed{s}" / f.name).read_bytes() == f.read_bytes()
    assert sorted(p.name for p in old.iterdir()) == ["digits-verdict"]
    assert experiment_runs("digits-verdict", out_dir=old) == experiment_runs("digits-verdict")
    with pytest.raises(ResultError, match=r"results moved to one folder per experiment: see .*digits-verdict/"
                                          r"seed3/pgd-10.json"):
        load_run(old / "digits-verdict-seed3" / "pgd-10.json")


def test_a_verdict_grade_experiment_refuses_uncommitted_library_code(tmp_path, monkeypatch):
    """With amata_lib/ modified, an experiment that carries a verdict is refused before any work, unless
    allow_dirty; then its results say so in their provenance."""
    from amata_lib import experiments
    from amata_lib.infra import results

    dirty = {"git_commit": "0" * 40, "library_sha256": "1" * 64, "library_dirty": True}
    monkeypatch.setattr(experiments, "library_state", lambda: dirty)
    monkeypatch.setattr(results, "library_state", lambda: dirty)
    kwargs = dict(runs=["pgd-2"], train_subset=64, epochs=1, eval_subset=20, autoattack_n=10, seed=1,
                  out_dir=tmp_path / "res", checkpoint_dir=tmp_path / "ck", log=None)
    with pytest.raises(UserError, match="carries a verdict, and amata_lib/ has uncommitted changes"):
        experiments.run_experiment("digits-verdict", **kwargs)
    assert not (tmp_path / "res").exists() and not (tmp_path / "ck").exists()
    (path,) = experiments.run_experiment("digits-verdict", allow_dirty=True, **kwargs)
    prov = json.loads(path.read_text())["provenance"]
    assert prov["library_dirty"] is True and prov["library_sha256"] == "1" * 64


def test_library_state_hashes_the_package_source_only(tmp_path):
    """The hash covers amata_lib's .py and .json files and nothing else; it changes with one byte of them."""
    from amata_lib.infra.results import library_sha256

    lib = tmp_path / "amata_lib"
    shutil_copy = __import__("shutil").copytree
    shutil_copy(ROOT / "amata_lib", lib, ignore=__import__("shutil").ignore_patterns("__pycache__"))
    assert library_sha256(lib) == library_sha256(ROOT / "amata_lib")
    (lib / "notes.txt").write_text("not source")
    (lib / "__pycache__").mkdir(exist_ok=True)
    (lib / "__pycache__" / "x.json").write_text("{}")
    assert library_sha256(lib) == library_sha256(ROOT / "amata_lib")
    (lib / "core" / "schedules.py").write_text((lib / "core" / "schedules.py").read_text() + "\n")
    assert library_sha256(lib) != library_sha256(ROOT / "amata_lib")
