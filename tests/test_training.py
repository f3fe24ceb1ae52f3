import warnings

import pytest
import torch

from amata_lib import Amata, Constant, DigitsCNN, TrainOptions, pgd, train
from amata_lib.core.maximizers import PGDMaximizer
from amata_lib.core.training import cpu_has_bf16, make_lr_schedule, select_device
from amata_lib.infra.errors import AmataWarning


def test_erm_is_not_robust(erm_model):
    _, history = erm_model
    last = history[-1]
    assert last["clean_acc"] > 0.9
    assert last["robust_acc"] < last["clean_acc"] - 0.5


def test_adversarial_training_lifts_robust_accuracy(erm_model, pgd_model):
    erm, pgd = erm_model[1][-1], pgd_model[1][-1]
    # about 0.28 against 0.03 at eps 0.2; the any-iterate PGD rule breaks one more example of the
    # PGD model than the last-iterate rule did (0.2756 vs 0.2778), below the old margin of 0.25
    assert pgd["robust_acc"] > erm["robust_acc"] + 0.2
    assert pgd["clean_acc"] > 0.5


def test_history_counts_passes_and_plans(digits):
    torch.manual_seed(0)
    schedule = Amata(1, 4, 0.5, 4)
    history = train(DigitsCNN(), *digits, epochs=4, eps=0.2, schedule=schedule,
                    options=TrainOptions(batch_size=256, eval_every=2))
    n_batches = -(-len(digits[0]) // 256)
    expected, total = [], 0
    for t in range(4):
        total += (schedule(t).steps + 1) * n_batches
        expected.append(total)
    assert [h["passes"] for h in history] == expected
    assert [h["steps"] for h in history] == [p.steps for p in schedule.plans()]
    assert [h["robust_acc"] is None for h in history] == [True, False, True, False]
    assert history[-1]["time"] == pytest.approx(sum(h["epoch_time"] for h in history))
    assert all(h["epoch_time"] > 0 for h in history)


def test_erm_costs_one_pass_per_batch(digits):
    history = train(DigitsCNN(), *digits, epochs=2, eps=0.2, options=TrainOptions(batch_size=500, eval_every=2))
    assert [h["passes"] for h in history] == [3, 6]
    assert history[0]["steps"] == 0


def test_callback_can_stop(digits):
    seen = []

    def cb(rec, model):
        seen.append(rec["epoch"])
        return rec["epoch"] == 2

    history = train(DigitsCNN(), *digits, epochs=5, eps=0.2, callback=cb, options=TrainOptions(eval_every=5))
    assert seen == [1, 2] and len(history) == 2 and history[-1]["stopped"]


def _run(digits, ckpt=None, callback=None):
    torch.manual_seed(3)
    model = DigitsCNN()
    history = train(model, *digits, epochs=3, eps=0.2, schedule=Constant(2, 0.1, 3), seed=3,
                    checkpoint=ckpt, callback=callback)
    return model, history


def test_interrupted_run_resumes_to_same_result(digits, tmp_path):
    ref_model, ref = _run(digits)
    ckpt = tmp_path / "run.pt"

    def crash(rec, model):
        if rec["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(digits, ckpt, crash)
    assert ckpt.exists()
    model, history = _run(digits, ckpt)
    assert len(history) == 3
    for a, b in zip(history, ref):
        assert (a["train_loss"], a["clean_acc"], a["robust_acc"]) == (b["train_loss"], b["clean_acc"], b["robust_acc"])
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)


def test_evaluation_does_not_change_trajectory(digits):
    torch.manual_seed(0)
    a = train(DigitsCNN(), *digits, epochs=2, eps=0.2, schedule=Constant(2, 0.1, 2),
              options=TrainOptions(eval_every=1))
    torch.manual_seed(0)
    b = train(DigitsCNN(), *digits, epochs=2, eps=0.2, schedule=Constant(2, 0.1, 2),
              options=TrainOptions(eval_every=2))
    assert a[-1]["train_loss"] == b[-1]["train_loss"] and a[-1]["robust_acc"] == b[-1]["robust_acc"]


@pytest.mark.parametrize("kwargs, name", [
    (dict(epochs=0), "epochs"), (dict(eps=-1.0), "eps"), (dict(options=TrainOptions(lr=0.0)), "lr"),
    (dict(options=TrainOptions(batch_size=0)), "batch_size"),
    (dict(options=TrainOptions(optimizer="rmsprop")), "optimizer"),
    (dict(options=TrainOptions(lr_schedule="linear")), "lr_schedule"),
    (dict(schedule=Constant(2, 0.1, 1)), "schedule covers"), (dict(device="gpu0"), "device"),
    (dict(options={"lr": 0.1}), "options must be a TrainOptions"),
    (dict(eps=None), "eps .* is needed"), (dict(epochs=None), "epochs is needed for ERM"),
    (dict(schedule=Constant(2, 0.1, 2), maximizer=PGDMaximizer(0.1)), "give eps once"),
])
def test_bad_training_arguments(digits, kwargs, name):
    args = dict(epochs=2, eps=0.2) | kwargs
    with pytest.raises(ValueError, match=name):
        train(DigitsCNN(), *digits, **args)


def test_eps_and_epochs_come_from_the_maximizer_and_the_schedule(digits):
    """Given once: the maximizer's radius is the robust test's, the schedule's length the run's."""
    torch.manual_seed(0)
    a = train(DigitsCNN(), *digits, schedule=Constant(2, 0.1, 2), maximizer=PGDMaximizer(0.2),
              options=TrainOptions(eval_subset=50))
    torch.manual_seed(0)
    b = train(DigitsCNN(), *digits, schedule=Constant(2, 0.1, 2), eps=0.2, epochs=2,
              options=TrainOptions(eval_subset=50))
    assert len(a) == 2 and a == [dict(r, epoch_time=s["epoch_time"], time=s["time"]) for r, s in zip(b, a)]


def test_select_device_auto_is_cpu_without_accelerator():
    if not torch.cuda.is_available():
        assert select_device("auto").type in ("cpu", "mps")
    assert select_device("cpu") == torch.device("cpu")


def test_cyclic_lr_is_wongs_per_iteration_triangle():
    """locuslab/fast_adversarial MNIST/train_mnist.py: lr = interp(epoch + (i + 1) / n, [0, 2T // 5, T], [0, lr, 0])."""
    import numpy as np
    epochs, batches, lr = 5, 4, 0.2
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    schedule = make_lr_schedule(opt, "cyclic", epochs, batches)
    seen = []
    for _epoch in range(epochs):
        for _i in range(batches):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.after_batch()
        schedule.after_epoch()  # does nothing for a per-minibatch schedule
    theirs = [np.interp(epoch + (i + 1) / batches, [0, epochs * 2 // 5, epochs], [0, lr, 0])
              for epoch in range(epochs) for i in range(batches)]
    assert seen == pytest.approx(theirs, abs=1e-12)
    assert max(seen) == pytest.approx(lr) and seen[-1] == pytest.approx(0)


def test_cyclic_run_resumes_to_the_same_result(digits, tmp_path):
    def run(ckpt=None, callback=None):
        torch.manual_seed(3)
        model = DigitsCNN()
        history = train(model, *digits, epochs=3, eps=0.2, schedule=Constant(1, 0.1, 3), checkpoint=ckpt,
                        callback=callback, options=TrainOptions(lr_schedule="cyclic", eval_every=3))
        return model, history

    ref_model, ref = run()
    assert [r["lr"] for r in ref][-1] == pytest.approx(0)

    def crash(rec, model):
        if rec["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "c.pt", crash)
    model, history = run(tmp_path / "c.pt")
    assert [r["lr"] for r in history] == [r["lr"] for r in ref]
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)


def test_early_stop_rolls_back_to_the_previous_epochs_weights(digits):
    """Wong et al.'s CIFAR10/train_fgsm.py --early-stop: a drop of more than 0.2 stops and keeps the weights
    saved after the previous epoch."""
    from amata_lib.methods import EarlyStopRollback

    class Scripted(EarlyStopRollback):
        accs = [0.5, 0.6, 0.35]

        def robust_acc(self, model):
            weights.append({k: v.clone() for k, v in model.state_dict().items()})
            return self.accs[len(weights) - 1]

    weights = []
    x, y = digits[0].tensors[0][:64], digits[0].tensors[1][:64]
    torch.manual_seed(0)
    model = DigitsCNN()
    history = train(model, *digits, epochs=5, eps=0.2, schedule=Constant(1, 0.1, 5), callback=Scripted(x, y, eps=0.2),
                    options=TrainOptions(eval_every=5))
    assert len(history) == 3 and history[-1]["stopped"] and history[-1]["rolled_back"]
    assert [r["early_stop_acc"] for r in history] == [0.5, 0.6, 0.35]
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[1][k]) and not torch.equal(v, weights[2][k]) or v.dtype == torch.long


def test_early_stop_measures_pgd_on_the_fixed_batch_without_touching_the_trajectory(erm_model):
    from amata_lib.methods import EarlyStopRollback

    model, _ = erm_model
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    stop = EarlyStopRollback(x, y, eps=0.2, steps=5)
    state = torch.get_rng_state()
    record = {}
    assert stop(record, model) is False and torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(0)
    x_adv = pgd(model.eval(), x, y, eps=0.2, alpha=0.05, steps=5)
    assert record["early_stop_acc"] == float((model(x_adv).argmax(1) == y).float().mean())


@pytest.mark.slow
def test_bf16_autocast_on_the_cpu_trains_within_tolerance_of_fp32(digits):
    """amp=True runs the attack and the step in bf16 on the CPU; robustness stays near fp32's.

    Tolerance: 6 points of PGD-10 accuracy on 200 test images after 8 epochs of PGD-3
    (measured gap on this project's AVX2 EPYC: see the note of issue 15); the two runs
    differ (bf16 really ran) but land close.
    """
    runs = {}
    for amp in (False, True):
        torch.manual_seed(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs[amp] = train(DigitsCNN(), *digits, epochs=8, eps=0.2, schedule=Constant(3, 0.1, 8), device="cpu",
                              options=TrainOptions(amp=amp, eval_steps=10, eval_subset=200))
        said = [str(w.message) for w in caught if issubclass(w.category, AmataWarning)]
        # one line exactly where bf16 is emulated (amp on a CPU without bf16 instructions), else silence
        assert len(said) == int(amp and not cpu_has_bf16()), said
        assert all("bf16 is emulated" in line for line in said)
    fp32, bf16 = runs[False][-1], runs[True][-1]
    assert fp32["train_loss"] != bf16["train_loss"]
    assert abs(fp32["robust_acc"] - bf16["robust_acc"]) <= 0.06
    assert abs(fp32["clean_acc"] - bf16["clean_acc"]) <= 0.06
    assert bf16["robust_acc"] > 0.2  # it learned: an untrained DigitsCNN scores near 0 under PGD-10
