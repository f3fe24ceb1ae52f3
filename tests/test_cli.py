"""The command line, driven in-process (``cli_main``, tests/conftest.py); real processes only where a test
needs one: a kill -9 and torchrun (the refusals of test_trust.py run as processes too)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amata_lib.cli import main
from amata_lib.infra.results import load_run

ROOT = Path(__file__).resolve().parents[1]


def test_help_explains_options(tmp_path, cli_main):
    out = cli_main("train", "--help", cwd=tmp_path)
    assert out.returncode == 0
    for opt in ("--k-min", "--k-max", "--tau", "--eps", "--dataset", "--data-path", "--checkpoint", "--seed"):
        assert opt in out.stdout


@pytest.mark.parametrize("args, match", [
    (["train", "--k-min", "0"], "argument --k-min: must be an integer >= 1 and <= 10000, got '0'"),
    (["train", "--epochs", "abc"], "invalid int value"),
    (["train", "--dataset", "mnist", "--data-path", "/nonexistent.npz"], "is not a file"),
    (["train", "--method", "amata", "--k-min", "12"], "k_min must be <= k_max"),
    (["show", "missing.json"], "no such file"),
    (["nonsense"], "invalid choice"),
])
def test_user_mistakes_give_one_line_and_no_traceback(tmp_path, cli_main, args, match):
    out = cli_main(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert match in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_schedule_command(capsys):
    assert main(["schedule", "--method", "amata", "--k-min", "2", "--k-max", "10", "--epochs", "4",
                 "--eps", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "cost relative to PGD-10" in out and "0.12500" in out  # K=4 at t=2, tau=0.5


TRAIN = ["train", "--method", "amata", "--k-min", "1", "--k-max", "3", "--epochs", "4", "--train-subset", "600",
         "--eval-subset", "100", "--no-progress"]


def test_train_writes_json_and_show_reads_it(tmp_path, cli_main):
    out = cli_main(*TRAIN, "--name", "t", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "data" / "results" / "t.json"
    run = load_run(path)
    assert [h["steps"] for h in run["history"]] == [1, 2, 2, 3]
    assert run["provenance"]["command"].startswith("python -m amata_lib train")
    assert "epoch   4/4" in out.stdout
    assert not (tmp_path / "data" / "checkpoints" / "t.pt").exists()
    shown = cli_main("show", str(path), cwd=tmp_path)
    assert shown.returncode == 0 and "digits" in shown.stdout


@pytest.mark.slow
def test_kill_9_and_resume_gives_same_result(tmp_path, cli_main, one_thread):
    """The reference and the resume run in this process; the run killed with SIGKILL is a real process."""
    ref = cli_main(*TRAIN, "--name", "ref", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    env = one_thread
    ckpt = tmp_path / "data" / "checkpoints" / "k.pt"
    proc = subprocess.Popen([sys.executable, "-m", "amata_lib", *TRAIN, "--name", "k"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint appeared before the kill"
    resumed = cli_main(*TRAIN, "--name", "k", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "data" / "results" / "ref.json").read_text())["history"]
    b = json.loads((tmp_path / "data" / "results" / "k.json").read_text())["history"]
    keys = ("epoch", "steps", "passes", "train_loss", "clean_acc", "robust_acc")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]


@pytest.mark.slow
def test_torchrun_trains_data_parallel_and_rank_0_alone_writes(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "amata_lib", *TRAIN, "--name", "ddp"], cwd=tmp_path, capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("wrote ") == 1 and out.stdout.count("epoch   4/4") == 1
    run = load_run(tmp_path / "data" / "results" / "ddp.json")
    assert run["config"]["world_size"] == 2 and [h["steps"] for h in run["history"]] == [1, 2, 2, 3]
    assert not (tmp_path / "data" / "checkpoints" / "ddp.pt").exists()


def test_train_with_an_amata_plus_maximizer(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--method", "amata", "--k-min", "2", "--k-max", "4", "--tau", "0.4", "--maximizer", "free",
            "--epochs", "2", "--train-subset", "256", "--batch-size", "128", "--eval-subset", "50", "--no-progress",
            "--detect-overfitting"]
    assert main(args) == 0
    (path,) = (tmp_path / "data" / "results").glob("digits-amata-free-seed0-*.json")  # name + settings digest
    run = load_run(path)
    assert run["config"]["run"]["maximizer"] == "free" and run["config"]["run"]["detect_overfitting"] is True
    # m replays per minibatch, 2 minibatches; Amata(2, 4) over 2 epochs gives m = 2, 3
    assert [h["steps"] for h in run["history"]] == [2, 3]
    assert [h["passes"] for h in run["history"]] == [2 * 2, 2 * 2 + 3 * 2]
    assert run["history"][-1]["fgsm_acc"] is not None
    assert "FGSM" in capsys.readouterr().out
    assert main(["show", str(path)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[2].split() == ["epoch", "K", "time(s)", "passes", "clean", "robust", "FGSM"]
    assert shown[-1].split()[:2] == ["2", "3"] and shown[-1].split()[3] == "10"


def test_show_prints_fractional_passes(tmp_path, cli_main):
    """FOSC stops examples early, so its pass counts are fractions; train prints them and show reads them back.

    With c_max = 0.05 some examples of the 256 stop before the plan's last step (16.656 passes with native and
    generic kernels); c_max = 0.5 stops all of them after the first step, a whole number."""
    out = cli_main("train", "--maximizer", "fosc", "--maximizer-arg", "c_max=0.05", "--epochs", "2",
                   "--train-subset", "256", "--eval-subset", "50", "--no-progress", "--name", "f", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "data" / "results" / "f.json"
    passes = load_run(path)["history"][-1]["passes"]
    assert not float(passes).is_integer()
    shown = cli_main("show", str(path), cwd=tmp_path)
    assert shown.returncode == 0
    assert f" {passes} " in shown.stdout


@pytest.mark.parametrize("extra, match", [
    (["--maximizer", "atta", "--maximizer-arg", "reset"], "--maximizer-arg must be KEY=VALUE, got 'reset'"),
    (["--maximizer", "atta", "--maximizer-arg", "m=3"], "maximizer 'atta' has no parameter 'm'"),
    (["--maximizer", "yopo", "--maximizer-arg", "layer=conv9"], "layer 'conv9' is not a submodule of DigitsCNN"),
    (["--method", "erm", "--maximizer", "free"], "method 'erm' trains on clean data, got maximizer 'free'"),
    (["--maximizer", "fast", "--maximizer-arg", "weak_fraction=2"],
     "weak_fraction must be a finite number >= 0 and <= 1, got 2"),
])
def test_maximizer_mistakes_give_one_line(tmp_path, cli_main, extra, match):
    out = cli_main("train", "--epochs", "1", "--no-progress", *extra, cwd=tmp_path)
    assert out.returncode == 2
    assert match in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
