"""Amata+ methods: Free, Fast, YOPO-m-n and ATTA as inner maximizers of the trainer."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Subset, TensorDataset

from amata_lib import Amata, Constant, DigitsCNN, Plan, TrainOptions, train
from amata_lib.core.attacks import input_grad, pgd
from amata_lib.core.history import catastrophic_overfitting
from amata_lib.methods import ATTAMaximizer, FastMaximizer, FreeMaximizer, YOPOMaximizer, build_maximizer

EPS = 0.2


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


class Counter:
    """Counts what a model really computes: full forwards/backwards (through ``fc2``), first-layer forwards,
    optimizer steps, and every input the model sees."""

    def __init__(self, model, optimizer=None):
        self.full_fwd = self.full_bwd = self.layer_fwd = self.steps = 0
        self.inputs = []
        model.fc2.register_forward_hook(lambda *a: self._add("full_fwd"))
        model.fc2.register_full_backward_hook(lambda *a: self._add("full_bwd"))
        model.relu1.register_forward_hook(lambda *a: self._add("layer_fwd"))
        model.register_forward_pre_hook(lambda _m, args: self.inputs.append(args[0].detach().clone()))
        if optimizer is not None:
            optimizer.register_step_post_hook(lambda *a: self._add("steps"))

    def _add(self, key):
        setattr(self, key, getattr(self, key) + 1)


def _assert_in_ball(inputs, x):
    for xa in inputs:
        assert (xa - x).abs().max() <= EPS + 1e-6
        assert xa.min() >= 0 and xa.max() <= 1


# ----------------------------------------------------------------------------- perturb-then-step


@pytest.mark.parametrize("make, plan", [
    (lambda: FastMaximizer(EPS), Plan(1, 1.25 * EPS)),
    (lambda: ATTAMaximizer(EPS), Plan(3, 0.07)),
])
def test_perturbing_methods_stay_in_ball_and_count_their_passes(make, plan):
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x, y = _batch()
    maximizer = make()
    counter = Counter(model)
    extra = {"index": torch.arange(len(x))} if getattr(maximizer, "uses_index", False) else {}
    x_adv = maximizer(model, x, y, plan, **extra)
    _assert_in_ball([x_adv], x)
    assert (x_adv - x).abs().max() > EPS / 2  # it moved
    assert counter.full_fwd == counter.full_bwd == maximizer.passes(plan)
    assert all(p.grad is None for p in model.parameters())


def test_fast_weak_start_is_fixed_and_random_start_is_not():
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x, y = _batch()
    fast = FastMaximizer(EPS, weak_fraction=0.5, fixed_start=0.5)
    plan = Plan(1, 1.25 * EPS)
    fast.start_epoch(0, 4)
    assert fast.weak
    a, b = fast(model, x, y, plan), fast(model, x, y, plan)
    assert torch.equal(a, b)
    start = (x + 0.5 * EPS).clamp(0, 1)
    expected = torch.min(torch.max(start + 1.25 * EPS * input_grad(model, start, y, "ce").sign(), x - EPS),
                         x + EPS).clamp(0, 1)
    assert torch.allclose(a, expected)
    fast.start_epoch(2, 4)  # 2 >= 0.5 * 4: random start from now on
    assert not fast.weak
    assert not torch.equal(fast(model, x, y, plan), fast(model, x, y, plan))


def test_atta_carries_perturbations_across_calls_and_resets():
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x, y = _batch(8)
    atta = ATTAMaximizer(EPS, reset=4, early_reset=2, early_epochs=3)
    idx = torch.tensor([5, 0, 7, 2, 9, 11, 3, 1])
    first = atta(model, x, y, Plan(2, 0.05), index=idx)
    assert torch.equal(atta.delta[idx], first - x) and atta.stored[idx].all()
    assert not atta.stored[[4, 6, 8, 10]].any()
    # a tiny step from the stored point: the second call starts where the first ended
    again = atta(model, x, y, Plan(1, 1e-6), index=idx)
    assert (again - first).abs().max() <= 1e-6 + 1e-7
    assert [atta.reset_period(t) for t in range(6)] == [2, 2, 2, 4, 4, 4]
    atta.start_epoch(0, 10)
    assert atta.stored[idx].all()  # epoch 1 (from 1): no reset
    atta.start_epoch(1, 10)  # epoch 2 is a multiple of the early period 2: cleared
    assert not atta.stored.any()
    atta(model, x, y, Plan(1, 0.05), index=idx)
    atta.start_epoch(2, 10)  # epoch 3: kept
    assert atta.stored[idx].all()
    atta.start_epoch(3, 10)  # epoch 4, period 4: cleared
    assert not atta.stored.any()


def test_atta_starts_and_restarts_near_clean_as_their_code():
    """hzzheng93/ATTA: the store starts (and every reset restarts) at x + 0.001 * N(0, 1)."""
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x, y = _batch(8)
    idx = torch.arange(8)
    atta = ATTAMaximizer(EPS, reset=2)
    torch.manual_seed(5)
    out = atta(model, x, y, Plan(1, 0.05), index=idx)
    torch.manual_seed(5)
    start = x + 0.001 * torch.randn_like(x)
    assert torch.equal(out, pgd(model, x, y, eps=EPS, alpha=0.05, steps=1, start=start))
    assert (out - x).abs().max() <= 0.05 + 0.006  # near clean after one step (noise < 6 sd), not a random point
    atta.start_epoch(0, 4)  # epoch 1 of period 2: kept
    assert atta.stored.all()
    atta.start_epoch(1, 4)  # epoch 2: reset
    torch.manual_seed(6)
    again = atta(model, x, y, Plan(1, 0.05), index=idx)
    torch.manual_seed(6)
    start = x + 0.001 * torch.randn_like(x)
    assert torch.equal(again, pgd(model, x, y, eps=EPS, alpha=0.05, steps=1, start=start))


def test_atta_resets_before_the_1_based_epochs_multiple_of_the_period():
    """Their CIFAR code: reset when ``epoch % epochs_reset == 0``, epochs from 1; their MNIST code never resets."""
    def resets(atta, epochs):
        return [t + 1 for t in range(epochs) if atta.resets_before(t)]

    assert resets(ATTAMaximizer(EPS, reset=10), 38) == [10, 20, 30]  # their CIFAR run: 38 epochs, reset 10
    assert resets(ATTAMaximizer(EPS, reset=None), 60) == []  # their MNIST run
    assert resets(ATTAMaximizer(EPS, reset=None, early_reset=2, early_epochs=5), 15) == [2, 4]  # Amata+ATTA
    assert resets(ATTAMaximizer(EPS, reset=10, early_reset=2, early_epochs=5), 15) == [2, 4, 10]


def test_atta_needs_indices_and_a_tensor_dataset(digits):
    model = DigitsCNN().eval()
    x, y = _batch(4)
    with pytest.raises(ValueError, match="index"):
        ATTAMaximizer(EPS)(model, x, y, Plan(1, 0.05))
    with pytest.raises(ValueError, match="index must hold one"):
        ATTAMaximizer(EPS)(model, x, y, Plan(1, 0.05), index=torch.arange(3))
    train_set = Subset(digits[0], range(64))
    with pytest.raises(ValueError, match="TensorDataset"):
        train(DigitsCNN(), train_set, digits[1], epochs=1, eps=EPS, schedule=Constant(1, 0.05, 1),
              maximizer=ATTAMaximizer(EPS))


# ----------------------------------------------------------------------------- own-step methods


def test_free_replays_m_times_with_one_pass_and_one_step_each():
    torch.manual_seed(0)
    model = DigitsCNN().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    counter = Counter(model, opt)
    x, y = _batch()
    free = FreeMaximizer(EPS)
    before = [p.detach().clone() for p in model.parameters()]
    loss, passes, _ = free.step(model, model, opt, x, y, Plan(4, EPS))
    assert counter.full_fwd == counter.full_bwd == counter.steps == passes == 4
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    _assert_in_ball(counter.inputs, x)
    assert torch.equal(counter.inputs[0], x)  # delta starts at zero
    # the perturbation is carried to the next minibatch (first rows of a smaller one)
    carried = free.delta.clone()
    assert carried.abs().max() > 0
    counter.inputs.clear()
    free.step(model, model, opt, x[:8], y[:8], Plan(1, EPS))
    assert torch.allclose(counter.inputs[0], (x[:8] + carried[:8]).clamp(0, 1))


def test_free_matches_their_main_free_loop():
    """mahyarnajibi/FreeAdversarialTraining main_free.py: the forward input is clamp(x + noise, 0, 1), the
    carried noise is clipped to [-eps, eps] only, so it may leave the box while no forward input does."""
    m, eps = 3, 0.3
    xs = [0.05 + 0.9 * (torch.rand(6, 1, 8, 8) > 0.5).float() for _ in range(2)]  # near 0 or 1: the box binds
    ys = [torch.randint(0, 10, (6,)) for _ in range(2)]
    torch.manual_seed(0)
    ours = DigitsCNN()
    theirs = DigitsCNN()
    theirs.load_state_dict(ours.state_dict())
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.1)
    counter = Counter(ours, opt_ours)
    free = FreeMaximizer(eps)
    noise = torch.zeros_like(xs[0])  # their global_noise_data
    for x, y in zip(xs, ys):
        free.step(ours, ours, opt_ours, x, y, Plan(m, eps))
        for _ in range(m):
            noise_batch = noise.clone().requires_grad_(True)
            inp = (x + noise_batch).clamp(0, 1.0)
            loss = F.cross_entropy(theirs(inp), y)
            opt_theirs.zero_grad()
            loss.backward()
            noise = (noise + eps * noise_batch.grad.sign()).clamp(-eps, eps)
            opt_theirs.step()
        assert torch.equal(free.delta, noise)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert free.delta.abs().max() <= eps
    assert ((xs[-1] + free.delta < 0) | (xs[-1] + free.delta > 1)).any()  # the carried delta leaves the box
    assert all(inp.min() >= 0 and inp.max() <= 1 for inp in counter.inputs)  # the forward input never does


def test_yopo_counts_full_and_cheap_passes_and_steps_once():
    torch.manual_seed(0)
    model = DigitsCNN().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    counter = Counter(model, opt)
    x, y = _batch()
    yopo = YOPOMaximizer(EPS, n=3)
    plan = Plan(5, 0.02)
    out = yopo.step(model, model, opt, x, y, plan)
    assert counter.full_fwd == counter.full_bwd == out.passes == 5
    # every full pass runs the first layer too; n cheap passes follow all full passes but the last
    assert counter.layer_fwd == 5 + 4 * 3 and out.layer_passes == 12
    assert counter.steps == 1
    _assert_in_ball(counter.inputs, x)


def test_yopo_first_layer_gradient_is_the_chain_rule_input_gradient():
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x, y = _batch(12)
    delta = torch.empty_like(x).uniform_(-EPS, EPS)
    captured = []

    def keep(_module, _inputs, out):
        out.retain_grad()
        captured.append(out)

    handle = model.relu1.register_forward_hook(keep)
    F.cross_entropy(model(x + delta), y, reduction="sum").backward()
    handle.remove()
    g = captured[0].grad
    yopo = YOPOMaximizer(EPS, layer="relu1")
    full = input_grad(model, x + delta, y, "ce")
    assert torch.allclose(yopo.cheap_grad(model, x, delta, g), full, atol=1e-6)
    # with g held fixed, a moved delta gives a different (stale) gradient, as YOPO intends
    moved = yopo.cheap_grad(model, x, delta + 0.1, g)
    assert not torch.allclose(moved, input_grad(model, x + delta + 0.1, y, "ce"), atol=1e-6)
    # full_pass gives the same input gradient and g, without touching the parameters' .grad
    model.zero_grad(set_to_none=True)
    grad_x, g_pass = yopo.full_pass(model, x, y, delta)
    assert torch.allclose(grad_x, full, atol=1e-6) and torch.allclose(g_pass, g, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_yopo_rejects_a_missing_layer():
    model = DigitsCNN()
    x, y = _batch(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="not a submodule"):
        YOPOMaximizer(EPS, layer="conv9").step(model, model, opt, x, y, Plan(1, 0.1))
    with pytest.raises(ValueError, match="n must be an integer"):
        YOPOMaximizer(EPS, n=0)


# ----------------------------------------------------------------------------- with the trainer


def _small(digits, n=300):
    return TensorDataset(*(t[:n] for t in digits[0].tensors)), TensorDataset(*(t[:100] for t in digits[1].tensors))


@pytest.mark.parametrize("name, schedule, per_batch", [
    ("free", Constant(3, EPS, 2), [3, 3]),  # m replays, no separate training pass
    ("yopo", Amata(2, 4, 0.1, 2), [2, 3]),  # m = K_t full passes (Amata: 2 then 3)
    ("fast", Constant(1, 0.25, 2), [2, 2]),  # one FGSM pass + one training pass
    ("atta", Constant(2, 0.05, 2), [3, 3]),  # K PGD steps + one training pass
])
def test_trainer_pass_accounting(digits, name, schedule, per_batch):
    if name == "yopo":
        assert [schedule(t).steps for t in range(2)] == per_batch
    train_set, test_set = _small(digits)
    kwargs = {"n": 2} if name == "yopo" else {}
    torch.manual_seed(0)
    history = train(DigitsCNN(), train_set, test_set, epochs=2, eps=EPS, schedule=schedule,
                    maximizer=build_maximizer(name, EPS, **kwargs),
                    options=TrainOptions(batch_size=100, eval_every=2))
    n_batches = 3
    assert [h["passes"] for h in history] == [n_batches * per_batch[0], n_batches * sum(per_batch)]
    assert all(h["train_loss"] > 0 for h in history)


@pytest.mark.parametrize("name, schedule", [
    ("free", Amata(2, 4, 2 * EPS, 3)),
    ("atta", Constant(1, 0.05, 3)),
])
def test_carried_state_survives_a_resume(digits, tmp_path, name, schedule):
    train_set, test_set = _small(digits)

    def run(ckpt=None, callback=None):
        torch.manual_seed(1)
        model = DigitsCNN()
        maximizer = build_maximizer(name, EPS)
        history = train(model, train_set, test_set, epochs=3, eps=EPS, schedule=schedule, maximizer=maximizer, seed=1,
                        checkpoint=ckpt, callback=callback, options=TrainOptions(batch_size=64))
        return model, maximizer, history

    ref_model, ref_max, ref = run()

    def crash(rec, model):
        if rec["epoch"] == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        run(ckpt, crash)
    saved = torch.load(ckpt, weights_only=True)["maximizer"]
    assert saved["delta"] is not None and saved["delta"].abs().max() > 0
    model, maximizer, history = run(ckpt)
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in ref]
    assert torch.equal(maximizer.delta, ref_max.delta)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)


def test_maximizer_without_schedule_is_an_error(digits):
    with pytest.raises(ValueError, match="needs a schedule"):
        train(DigitsCNN(), *_small(digits), epochs=1, eps=EPS, maximizer=FreeMaximizer(EPS))


def test_overfitting_detection_adds_its_fields_to_the_history(digits):  # the rule itself: next test
    torch.manual_seed(0)
    history = train(DigitsCNN(), *_small(digits), epochs=2, eps=EPS, schedule=Constant(1, 0.25, 2),
                    maximizer=FastMaximizer(EPS), options=TrainOptions(eval_every=2, detect_overfitting=True))
    assert history[0]["fgsm_acc"] is None and history[0]["catastrophic_overfitting"] is None
    assert 0 <= history[1]["fgsm_acc"] <= 1 and history[1]["catastrophic_overfitting"] is False


@pytest.mark.parametrize("pgd, fgsm, flagged", [
    ([0.40, 0.45, 0.10], [0.50, 0.55, 0.58], True),   # PGD collapses while FGSM holds (gap 0.48 alone: not)
    ([0.40, 0.45, 0.10], [0.50, 0.55, 0.20], False),  # both fall: not the overfitting symptom
    ([0.40, 0.45, 0.30], [0.50, 0.55, 0.70], False),  # a 15-point dip is under the 20-point threshold
    ([0.40, 0.45, 0.46], [0.50, 0.55, 0.60], False),
    ([0.12, 0.14, 0.12], [0.54, 0.66, 0.88], True),   # never robust to PGD, FGSM gap of 76 points
    ([0.12, 0.14, 0.12], [0.54, 0.66, 0.60], False),  # gap of 48 points: under the 50-point threshold
])
def test_catastrophic_overfitting_rule(pgd, fgsm, flagged):
    history = [{"robust_acc": p, "fgsm_acc": f} for p, f in zip(pgd, fgsm)]
    assert catastrophic_overfitting(history) is flagged
    assert catastrophic_overfitting(history + [{"robust_acc": None, "fgsm_acc": None}]) is False
    with pytest.raises(ValueError, match="drop"):
        catastrophic_overfitting(history, drop=0)
    with pytest.raises(ValueError, match="gap"):
        catastrophic_overfitting(history, gap=-1)


def test_the_stored_mnist_fast_runs_are_flagged():
    """The reduced MNIST Fast runs (data/results) lost to PGD from the first epochs; the gap rule sees it."""
    from pathlib import Path

    from amata_lib.infra.results import load_run
    folder = Path(__file__).resolve().parents[1] / "data" / "results" / "mnist-plus-reduced" / "seed0"
    for name in ("fast", "amata-fast"):
        history = load_run(folder / f"{name}.json")["history"]
        flags = [catastrophic_overfitting(history[:i + 1]) for i in range(len(history))]
        assert flags[-1] and sum(flags) >= 5, (name, flags)
    pgd = load_run(folder / "pgd-10.json")["history"]
    healthy = [dict(r, fgsm_acc=min(1.0, r["robust_acc"] + 0.1)) for r in pgd]  # a typical 10-point gap
    assert not any(catastrophic_overfitting(healthy[:i + 1]) for i in range(len(healthy)))


@pytest.mark.parametrize("name, kwargs, field", [
    ("fast", {"weak_fraction": 1.5}, "weak_fraction"),
    ("fast", {"fixed_start": 2.0}, "fixed_start"),
    ("atta", {"reset": 0}, "reset"),
    ("atta", {"early_reset": 0}, "early_reset"),
    ("yopo", {"layer": ""}, "layer"),
    ("free", {"n": 3}, "has no parameter 'n'"),
])
def test_bad_plus_arguments(name, kwargs, field):
    with pytest.raises(ValueError, match=field):
        build_maximizer(name, EPS, **kwargs)


# ----------------------------------------------------------------------------- ascent, not descent


def _signed_step(model, x_start, x, y, alpha):
    """The expected result of one signed ascent step of the summed cross-entropy from ``x_start``."""
    return torch.min(torch.max(x_start + alpha * input_grad(model, x_start, y, "ce").sign(), x - EPS),
                     x + EPS).clamp(0, 1)


def test_free_steps_delta_up_the_loss():
    torch.manual_seed(0)
    model = DigitsCNN().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights frozen: the delta step alone is checked
    x, y = _batch()
    free = FreeMaximizer(EPS)
    free.step(model, model, opt, x, y, Plan(1, 0.05))
    assert torch.equal(free.delta, (0.05 * input_grad(model, x, y, "ce").sign()).clamp(-EPS, EPS))


def test_fast_and_atta_step_up_the_loss():
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x, y = _batch()
    starts = (lambda: (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1),  # Fast: uniform
              lambda: (x + 0.001 * torch.randn_like(x)).clamp(0, 1))  # ATTA: near clean
    for (maximizer, extra), draw in zip(((FastMaximizer(EPS), {}),
                                         (ATTAMaximizer(EPS), {"index": torch.arange(len(x))})), starts):
        torch.manual_seed(5)
        x_adv = maximizer(model, x, y, Plan(1, 0.1), **extra)
        torch.manual_seed(5)  # the same start the method drew
        start = draw()
        assert torch.allclose(x_adv, _signed_step(model, start, x, y, 0.1)), type(maximizer).__name__


def test_yopo_cheap_steps_go_up_the_loss():
    torch.manual_seed(0)
    model = DigitsCNN().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    counter = Counter(model)
    x, y = _batch()
    torch.manual_seed(5)
    YOPOMaximizer(EPS, n=1).step(model, model, opt, x, y, Plan(2, 0.05))
    torch.manual_seed(5)
    start = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1)
    full_inputs = counter.inputs[::2]  # full pass, cheap pass, full pass
    assert torch.allclose(full_inputs[0], start)
    # one cheap step from the start: at the start the cheap gradient is the true one (chain rule)
    assert torch.allclose(full_inputs[1], _signed_step(model, start, x, y, 0.05))


# ----------------------------------------------------------------------------- what the trainer really computes


@pytest.mark.parametrize("name, schedule, kwargs", [
    ("free", Amata(2, 4, 2 * EPS, 2), {}),
    ("yopo", Amata(2, 4, 0.1, 2), {"n": 2}),
    ("fast", Constant(1, 0.25, 2), {}),
    ("atta", Constant(2, 0.05, 2), {}),
])
def test_history_passes_equal_the_passes_computed(digits, monkeypatch, name, schedule, kwargs):
    import amata_lib.core.training as training
    monkeypatch.setattr(training, "_evaluate", lambda *a, with_fgsm=False, **k: [0.0] * (3 if with_fgsm else 2))
    train_set, test_set = _small(digits, n=250)  # minibatches of 100, 100, 50
    torch.manual_seed(0)
    model = DigitsCNN()
    counter = Counter(model)
    history = train(model, train_set, test_set, epochs=2, eps=EPS, schedule=schedule,
                    maximizer=build_maximizer(name, EPS, **kwargs), options=TrainOptions(batch_size=100))
    # train() first checks the model against the data with one forward pass of one example (no backward)
    assert counter.full_fwd - 1 == counter.full_bwd == history[-1]["passes"]
    if name == "yopo":
        assert counter.layer_fwd == counter.full_fwd + history[-1]["layer_passes"]
        assert history[-1]["layer_passes"] == 3 * 2 * ((2 - 1) + (3 - 1))  # n (m_t - 1) per minibatch
    else:
        assert "layer_passes" not in history[-1]


def test_more_bad_plus_arguments(digits, tmp_path):
    with pytest.raises(ValueError, match="fixed_start=0.2 has no effect with weak_fraction=0"):
        FastMaximizer(EPS, fixed_start=0.2)
    with pytest.raises(ValueError, match="early_reset=2 has no effect with early_epochs=0"):
        ATTAMaximizer(EPS, early_reset=2)
    with pytest.raises(ValueError, match="grad_reduction"):
        YOPOMaximizer(EPS, grad_reduction="max")
    model = DigitsCNN().eval()
    x, y = _batch(4)
    for bad in (torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([0, -1, 2, 3])):
        with pytest.raises(ValueError, match="index must hold integer dataset indices >= 0"):
            ATTAMaximizer(EPS)(model, x, y, Plan(1, 0.05), index=bad)
    from amata_lib import PreActResNet18
    with pytest.raises(ValueError, match="layer 'normalize' gives an output without gradient"):
        YOPOMaximizer(8 / 255, n=1, layer="normalize").step(
            *[PreActResNet18()] * 2, torch.optim.SGD(PreActResNet18().parameters(), lr=0.1),
            torch.rand(2, 3, 32, 32), torch.tensor([0, 1]), Plan(2, 0.01))
    with pytest.raises(ValueError, match="detect_overfitting must be True or False"):
        train(DigitsCNN(), *_small(digits), epochs=1, eps=EPS, options=TrainOptions(detect_overfitting="yes"))
    ckpt = tmp_path / "atta.pt"
    train(DigitsCNN(), *_small(digits), epochs=1, eps=EPS, schedule=Constant(1, 0.05, 2), checkpoint=ckpt,
          maximizer=ATTAMaximizer(EPS))
    with pytest.raises(ValueError, match="belongs to a run with other settings .* maximizer.early_reset: 10 -> "):
        train(DigitsCNN(), *_small(digits), epochs=2, eps=EPS, schedule=Constant(1, 0.05, 2), checkpoint=ckpt,
              maximizer=FastMaximizer(EPS))


# ----------------------------------------------------------------------------- N-FGSM


def test_nfgsm_is_their_train_py_step_on_a_tiny_example():
    """noise U(-2 eps, 2 eps) clipped into [0, 1], one signed step of alpha from there, no projection to the ball."""
    from amata_lib.methods import NFGSMMaximizer

    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x, y = _batch()
    maximizer = NFGSMMaximizer(EPS)
    counter = Counter(model)
    torch.manual_seed(5)
    x_adv = maximizer(model, x, y, Plan(1, EPS))
    assert counter.full_fwd == counter.full_bwd == 1 and maximizer.passes(Plan(1, EPS)) == 1
    torch.manual_seed(5)  # the same noise, by hand
    start = (x + torch.empty_like(x).uniform_(-2 * EPS, 2 * EPS)).clamp(0, 1)
    want = (start + EPS * input_grad(model, start, y, "ce").sign()).clamp(0, 1)
    assert torch.equal(x_adv, want)
    assert (x_adv - x).abs().max() > EPS + 0.05  # not projected back: it leaves the ball
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    torch.manual_seed(5)
    clipped = NFGSMMaximizer(EPS, clip=1.0)(model, x, y, Plan(1, EPS))
    assert (clipped - x).abs().max() <= EPS + 1e-6  # their --clip 1: Fast's ball


def test_nfgsm_by_name_in_configs_and_its_bad_arguments():
    from amata_lib.methods import NFGSMMaximizer

    m = build_maximizer("n-fgsm", EPS, noise=1.0)
    assert isinstance(m, NFGSMMaximizer) and m.settings() == {"name": "n-fgsm", "eps": EPS, "noise": 1.0,
                                                             "clip": None}
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        NFGSMMaximizer(EPS, noise=-1)
    with pytest.raises(ValueError, match="clip must be a finite number > 0"):
        NFGSMMaximizer(EPS, clip=0)
