import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from amata_lib.book.viz import show_adversarial_grid  # noqa: E402


@pytest.fixture
def grid_inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=gen)
    x_adv = (x + 0.1 * torch.randn(x.shape, generator=gen).sign()).clamp(0, 1)
    p_clean = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    p_adv = p_clean.flip(1)
    return x, x_adv, p_clean, p_adv


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


def test_grid_has_three_rows_of_images_and_prediction_titles(grid_inputs):
    x, x_adv, p_clean, p_adv = grid_inputs
    fig = show_adversarial_grid(x, x_adv, p_clean, p_adv, eps=0.1, y=torch.tensor([0, 1, 1, 0]))
    axes = _image_axes(fig)
    assert len(axes) == 12
    titles = [ax.get_title() for ax in axes]
    assert titles[0] == "label 0\npred 0 (0.90)"
    assert titles[3] == "label 0\npred 1 (0.70)"
    assert titles[4:8] == ["pred 1 (0.90)", "pred 0 (0.80)", "pred 1 (0.60)", "pred 0 (0.70)"]
    assert titles[8:] == ["", "", "", ""]


def test_perturbation_row_shows_difference_on_eps_scale(grid_inputs):
    x, x_adv, p_clean, p_adv = grid_inputs
    fig = show_adversarial_grid(x, x_adv, p_clean, p_adv, eps=0.25)
    perturbation = _image_axes(fig)[8:]
    for i, ax in enumerate(perturbation):
        image = ax.images[0]
        assert image.get_clim() == pytest.approx((-0.25, 0.25))
        assert torch.allclose(torch.as_tensor(image.get_array().data), x_adv[i, 0] - x[i, 0])
    clean_image = _image_axes(fig)[0].images[0]
    assert clean_image.get_clim() == (0.0, 1.0)


def test_grid_accepts_images_without_channel_axis(grid_inputs):
    x, x_adv, p_clean, p_adv = grid_inputs
    fig = show_adversarial_grid(x[:, 0], x_adv[:, 0], p_clean, p_adv, eps=0.1)
    assert len(_image_axes(fig)) == 12


@pytest.mark.parametrize("change, message", [
    (lambda a: {**a, "x_adv": a["x_adv"][:3]}, "x_adv must have the shape of x"),
    (lambda a: {**a, "x": a["x"].repeat(1, 3, 1, 1), "x_adv": a["x_adv"].repeat(1, 3, 1, 1)}, "x must have shape"),
    (lambda a: {**a, "p_adv": a["p_adv"][:2]}, "p_adv must have shape 4 x classes"),
    (lambda a: {**a, "p_clean": a["p_clean"][:, 0]}, "p_clean must have shape"),
    (lambda a: {**a, "y": torch.zeros(3, dtype=torch.long)}, r"y must have shape \(4,\)"),
    (lambda a: {**a, "eps": 0.0}, "eps must be a finite number > 0, got 0.0"),
    (lambda a: {**a, "eps": float("nan")}, "eps must be a finite number > 0"),
    (lambda a: {**a, "x": a["x"][:0], "x_adv": a["x_adv"][:0]}, "at least one image"),
])
def test_bad_input_raises_value_error(grid_inputs, change, message):
    x, x_adv, p_clean, p_adv = grid_inputs
    args = change({"x": x, "x_adv": x_adv, "p_clean": p_clean, "p_adv": p_adv, "eps": 0.1, "y": None})
    with pytest.raises(ValueError, match=message):
        show_adversarial_grid(args["x"], args["x_adv"], args["p_clean"], args["p_adv"], eps=args["eps"], y=args["y"])


@pytest.mark.parametrize("method, params, full, steps", [
    ("pgd", {"k": 10}, 11, 1), ("atta", {"k": 1}, 2, 1), ("fast", {}, 2, 1),
    ("free", {"m": 4}, 4, 4), ("yopo", {"m": 5, "n": 10}, 5, 1),
])
def test_inner_loop_events_count_each_methods_passes(method, params, full, steps):
    from amata_lib.book.viz import inner_loop_events
    events = inner_loop_events(method, **params)
    assert sum(kind != "layer" for kind, _ in events) == full
    assert sum(step for _, step in events) == steps and events[-1][1]
    if method == "yopo":
        assert sum(kind == "layer" for kind, _ in events) == 40  # after all full passes but the last


def test_plot_inner_loops_draws_one_bar_per_pass():
    from amata_lib.book.viz import inner_loop_events, plot_inner_loops
    rows = {"PGD-3": inner_loop_events("pgd", k=3), "Free-2": inner_loop_events("free", m=2)}
    fig = plot_inner_loops(rows, title="t")
    ax = fig.axes[0]
    assert len(ax.patches) == 4 + 2
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Free-2", "PGD-3"]
    with pytest.raises(ValueError, match="method must be one of"):
        inner_loop_events("sgd")
    with pytest.raises(ValueError, match="m must be an integer >= 1"):
        inner_loop_events("yopo", m=0)
    with pytest.raises(ValueError, match="rows"):
        plot_inner_loops({})


def test_plot_protocol_draws_every_row_and_the_target():
    from amata_lib.book.viz import plot_protocol
    from amata_lib.study.verdict import verdict

    def run(accs, per_epoch, steps):
        return {"history": [{"epoch": i + 1, "steps": steps, "robust_acc": a, "passes": per_epoch * (i + 1),
                             "time": 1.0 * (i + 1)} for i, a in enumerate(accs)],
                "report": {"pgd": accs[-1], "autoattack": None, "warmup": {"passes": 5, "time": 0.1}}}
    runs = {s: {"pgd": run([0.2, 0.5], 100, 10), "amata": run([0.3, 0.5 + s / 100], 50, 5)} for s in (0, 1)}
    v = verdict({"seeds": [0, 1], "reference": "pgd", "compare": ["amata"],
                 "target": {"rule": "fixed", "value": 0.4}}, runs)
    fig = plot_protocol(runs, v, title="t")
    ax, bx = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["pgd", "amata", "target 40.0%"]
    assert list(ax.get_lines()[0].get_xdata()) == [105, 205]  # warm-up passes included
    assert list(ax.get_lines()[1].get_ydata()) == pytest.approx([0.3, 0.505])  # mean over seeds
    assert list(bx.get_lines()[1].get_ydata()) == [5, 5]
    plt.close(fig)


def test_plot_at_a_glance_draws_schedule_cost_and_result_of_stored_runs():
    from amata_lib.book.viz import plot_at_a_glance

    def run(steps):
        return {"history": [{"epoch": i + 1, "steps": k, "alpha": 0.5 / k, "passes": 100 * (i + 1),
                             "time": 60.0 * (i + 1), "robust_acc": 0.1 * (i + 1)} for i, k in enumerate(steps)],
                "report": {"warmup": {"passes": 1000, "time": 30.0}}}
    fig = plot_at_a_glance({"pgd-10": run([10, 10, 10]), "amata": run([2, 6, 10])})
    kx, px, rx, alpha_axis = fig.axes
    assert list(kx.get_lines()[1].get_ydata()) == [2, 6, 10]
    assert list(alpha_axis.get_lines()[1].get_ydata()) == pytest.approx([0.25, 0.5 / 6, 0.05])
    assert list(px.get_lines()[0].get_ydata()) == pytest.approx([1.1, 1.2, 1.3])  # thousands, warm-up in
    assert list(rx.get_lines()[0].get_xdata()) == pytest.approx([1.5, 2.5, 3.5])  # minutes, warm-up in
    assert [t.get_text() for t in px.get_legend().get_texts()] == ["pgd-10", "amata"]
    plt.close(fig)
    with pytest.raises(ValueError, match="no per-epoch history"):
        plot_at_a_glance({"pgd-10": {"history": []}})
    with pytest.raises(ValueError, match="at least one"):
        plot_at_a_glance({})
