"""Adaptive Amata: the greedy Eq. 14 choice, its probe cost, resume, CLI and configs."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

import amata_lib.study.adaptive as adaptive
from amata_lib import DigitsCNN, TrainOptions, load, train
from amata_lib.core.schedules import Plan
from amata_lib.infra.errors import UserError
from amata_lib.spec import make_schedule
from amata_lib.study.adaptive import Adaptive
from amata_lib.study.criterion import plan_value


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def fake_values(monkeypatch, value):
    """Replace V(plan) by a known function of K (the choice is then known in advance)."""
    monkeypatch.setattr(adaptive, "plan_value", lambda model, x, y, plan, *, eps, gamma: value(plan.steps) - gamma
                        * plan.steps)


def test_it_picks_the_maximiser_of_its_objective(monkeypatch):
    fake_values(monkeypatch, lambda k: -(k - 5) ** 2)
    s = Adaptive(2, 10, 0.5, 4, gamma=0.0)
    plan, passes = s.choose(0, None, None, None, 0.2)
    assert plan == Plan(5, 0.1) and passes == sum(k + 1 for k in range(2, 11))
    assert s.values[0][5] == 0 and s.values[0][2] == -9
    # gamma prices each step: V(K) = -(K - 5)^2 - 3 K is -15, -13, -13, -15 at K = 2..5: a tie of 3 and 4,
    # which goes to the smaller K
    s = Adaptive(2, 10, 0.5, 4, gamma=3.0)
    assert s.choose(0, None, None, None, 0.2)[0].steps == 3
    assert s.values[0][3] == s.values[0][4] == -13

def test_ties_go_to_the_smaller_k_and_monotone_never_goes_down(monkeypatch):
    fake_values(monkeypatch, lambda k: 0.0)
    s = Adaptive(2, 10, 0.5, 3, gamma=0.0)
    assert s.choose(0, None, None, None, 0.2)[0].steps == 2
    values = iter([lambda k: -(k - 7) ** 2, lambda k: -(k - 3) ** 2])
    s = Adaptive(2, 10, 0.5, 3, gamma=0.0, monotone=True)
    fake_values(monkeypatch, next(values))
    assert s.choose(0, None, None, None, 0.2)[0].steps == 7
    fake_values(monkeypatch, next(values))
    plan, passes = s.choose(1, None, None, None, 0.2)
    assert plan.steps == 7 and passes == sum(k + 1 for k in range(7, 11))  # only K >= 7 were probed


def test_probe_every_n_epochs_keeps_the_choice_in_between(monkeypatch):
    fake_values(monkeypatch, lambda k: -abs(k - 4))
    s = Adaptive(2, 10, 0.5, 5, gamma=0.0, every=2)
    costs = [s.choose(t, None, None, None, 0.2)[1] for t in range(5)]
    assert [p.steps for p in s.plans()] == [4] * 5 and costs[1] == costs[3] == 0 and costs[0] > 0
    assert s(3) == Plan(4, 0.125)
    with pytest.raises(UserError, match="chooses epoch 4's plan during training"):
        Adaptive(2, 10, 0.5, 5, gamma=0.0)(4)


def test_the_trainer_uses_the_argmax_at_the_epochs_start_weights_and_counts_the_probe(digits):
    """Epoch t's plan is the argmax of plan_value at the weights after epoch t-1 (computed here independently)."""
    train_set, test_set = digits
    x = train_set.tensors[0][:64]
    y = train_set.tensors[1][:64]
    expected = []

    def check(record, model):  # the choice the next epoch should make, from the weights now
        values = {k: plan_value(model, x, y, Plan(k, 0.5 / k), eps=0.2, gamma=0.002) for k in range(2, 7)}
        expected.append(max(values, key=lambda k: (values[k], -k)))

    torch.manual_seed(0)
    s = Adaptive(2, 6, 0.5, 4, gamma=0.002, probe_size=64)
    h = train(DigitsCNN(), train_set, test_set, epochs=4, eps=0.2, schedule=s, callback=check, device="cpu",
              options=TrainOptions(eval_subset=50, eval_steps=3))
    assert [r["steps"] for r in h[1:]] == expected[:-1]
    probe = sum(k + 1 for k in range(2, 7)) * 64 / 128  # in minibatches of the training batch size (128)
    assert all(r["probe_passes"] == probe for r in h)
    batches = -(-len(train_set) // 128)
    assert h[0]["passes"] == pytest.approx(batches * (h[0]["steps"] + 1) + probe)
    assert all(r["probe_time"] > 0 for r in h)


@pytest.mark.slow
def test_resume_after_kill_9_gives_the_same_run(tmp_path, cli_main, one_thread):
    """The reference and the resume run in this process; the run killed with SIGKILL is a real process."""
    args = ["train", "--method", "adaptive", "--k-min", "2", "--k-max", "6",
            "--gamma", "0.002", "--probe-size", "64", "--epochs", "5", "--eval-subset", "50", "--eval-steps", "3",
            "--no-progress"]
    env = one_thread
    ref = cli_main(*args, "--out", tmp_path / "ref.json", "--checkpoint", tmp_path / "ref.pt", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    ckpt = tmp_path / "kill.pt"
    out = tmp_path / "kill.json"
    proc = subprocess.Popen([sys.executable, "-m", "amata_lib", *args, "--out", str(out), "--checkpoint", str(ckpt)],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not out.exists(), "the kill came too late to test a resume"
    resumed = cli_main(*args, "--out", out, "--checkpoint", ckpt, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    keys = ("epoch", "steps", "alpha", "passes", "probe_passes", "train_loss", "clean_acc", "robust_acc")
    a, b = (json.loads(p.read_text())["history"] for p in (tmp_path / "ref.json", out))
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]


def test_factory_cli_and_config_errors(tmp_path, cli_main):
    s = make_schedule("adaptive", 6, k_min=2, k_max=5, tau=0.5, gamma=0.01, probe_every=2, monotone=True)
    assert isinstance(s, Adaptive) and s.every == 2 and s.monotone and s.probe_size == 128
    assert s.fingerprint()["candidates"] == [[2, 0.25], [3, 0.5 / 3], [4, 0.125], [5, 0.1]]
    with pytest.raises(UserError, match="gamma"):
        make_schedule("adaptive", 6, k_min=2, k_max=5, tau=0.5)
    with pytest.raises(ValueError, match="gamma must be"):
        Adaptive(2, 5, 0.5, 6, gamma=-1.0)
    for argv, match in ((["schedule", "--method", "adaptive"], "no schedule to print"),
                        (["train", "--method", "adaptive", "--alpha", "0.1"], "--alpha is not used by --method"),
                        (["train", "--method", "amata", "--gamma", "1"], "--gamma is not used by --method 'amata'"),
                        (["train", "--method", "adaptive", "--probe-size", "0"], "--probe-size")):
        bad = cli_main(*argv, cwd=tmp_path)
        assert bad.returncode == 2 and match in bad.stderr and "Traceback" not in bad.stderr, (argv, bad.stderr)
