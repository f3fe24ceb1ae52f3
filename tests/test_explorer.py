import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from amata_lib import Amata, Constant, Exponential, FromFunction, Plan, Step  # noqa: E402
from amata_lib.book.explorer import (  # noqa: E402
    SHAPES,
    SLIDER_RANGES,
    STATIC_SHAPES,
    build_schedule,
    explore,
    plot_exploration,
    schedule_explorer,
    static_explorer_html,
)
from amata_lib.core.schedules import relative_cost  # noqa: E402


@pytest.mark.parametrize("shape, cls", [("constant", Constant), ("linear", Amata),
                                        ("exponential", Exponential), ("step", Step)])
def test_build_schedule_shapes(shape, cls):
    s = build_schedule(shape, k_min=2, k_max=10, tau=0.5, eps=0.2, epochs=30)
    assert isinstance(s, cls) and s.epochs == 30
    assert s(0).steps == (10 if shape == "constant" else 2)
    assert s(29).steps == (9 if shape == "exponential" else 10)  # 2 * 5 ** (29 / 30) = 9.48
    assert all(p.steps * p.alpha == pytest.approx(0.5) for p in s.plans())


def test_linear_is_algorithm_1_and_tau_defaults_to_2_5_eps():
    s = build_schedule("linear", k_min=2, k_max=10, eps=0.2, epochs=30)
    assert s.plans() == Amata(2, 10, 0.5, 30).plans()


def test_step_shape_stages():
    s = build_schedule("step", k_min=2, k_max=10, tau=1.0, epochs=8)
    assert [p.steps for p in s.plans()] == [2, 2, 5, 5, 7, 7, 10, 10]
    assert [p.steps for p in build_schedule("step", k_min=3, k_max=3, epochs=5).plans()] == [3] * 5


@pytest.mark.parametrize("kwargs, name", [
    ({"shape": "cosine"}, "shape"), ({"k_min": 0}, "k_min"), ({"k_max": 2.5}, "k_max"),
    ({"k_min": 5, "k_max": 3}, "k_min"), ({"eps": 0}, "eps"), ({"eps": float("nan")}, "eps"),
    ({"tau": -1}, "tau"), ({"epochs": 0}, "epochs"), ({"shape": "constant", "epochs": 1.5}, "epochs"),
])
def test_build_schedule_rejects_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        build_schedule(**kwargs)


def test_registered_shape_is_used_without_editing_build_schedule(monkeypatch):
    def halfway(*, k_min, k_max, tau, epochs):
        return FromFunction(lambda t: Plan(k_min if t < epochs // 2 else k_max, tau / k_max), epochs, "halfway")

    monkeypatch.setitem(SHAPES, "halfway", halfway)
    s = build_schedule("halfway", k_min=1, k_max=4, tau=1.0, epochs=4)
    assert [p.steps for p in s.plans()] == [1, 1, 4, 4]


def test_explore_numbers():
    s = Amata(2, 10, 0.5, 30)
    r = explore(s, eps=0.2, k_ref=10)
    assert r.epochs == 30 and r.steps[0] == 2 and r.steps[-1] == 10
    assert np.allclose(r.alpha, 0.5 / r.steps)
    assert r.passes[-1] == s.cost() and r.ref_passes[-1] == 11 * 30
    assert np.all(np.diff(r.passes) == r.steps[1:] + 1)
    assert r.cost_ratio == pytest.approx(relative_cost(s)) == pytest.approx(s.cost() / 330)
    assert r.warning == ""


def test_explore_warns_when_tau_below_eps():
    r = explore(Amata(2, 10, 0.1, 30), eps=0.2, k_ref=10)
    assert "cannot reach" in r.warning
    assert explore(Amata(2, 10, 0.2, 30), eps=0.2, k_ref=10).warning == ""


def test_explore_rejects_bad_eps_and_k_ref():
    with pytest.raises(ValueError, match="eps"):
        explore(Amata(2, 10, 0.5, 3), eps=-0.1, k_ref=10)
    with pytest.raises(ValueError, match="k_ref"):
        explore(Amata(2, 10, 0.5, 3), eps=0.1, k_ref=0)


def test_plot_has_three_panels_with_the_data():
    r = explore(Amata(2, 10, 0.5, 30), eps=0.2, k_ref=10)
    fig = plot_exploration(r)
    try:
        assert len(fig.axes) == 3
        assert np.array_equal(fig.axes[0].patches[0].get_data().values, r.steps)
        assert np.array_equal(fig.axes[1].patches[0].get_data().values, r.alpha)
        assert np.array_equal(fig.axes[2].lines[0].get_ydata(), r.passes)
        assert np.array_equal(fig.axes[2].lines[1].get_ydata(), r.ref_passes)
    finally:
        plt.close(fig)


def test_widget_recomputes_on_slider_changes():
    w = schedule_explorer(draw=False)
    assert w.result.cost_ratio == pytest.approx(relative_cost(Amata(2, 10, 0.5, 30)))
    w.controls["k_max"].value = 20
    w.controls["epochs"].value = 40
    assert w.result.steps[-1] == 20 and w.result.epochs == 40
    assert w.result.cost_ratio == pytest.approx(relative_cost(Amata(2, 20, 0.5, 40)))
    w.controls["shape"].value = "constant"
    assert w.result.cost_ratio == pytest.approx(1.0)
    assert "cost ratio 1.000" in w.message


def test_widget_eps_slider_warns_and_invalid_settings_do_not_crash():
    w = schedule_explorer(draw=False)
    w.controls["eps"].value = 0.8  # tau = 0.5 < eps
    assert "cannot reach" in w.result.warning and "warning" in w.message
    w.controls["k_min"].value = 30  # > K_max = 10
    assert w.result is None and "k_min" in w.message
    w.controls["k_max"].value = 30
    assert w.result is not None and np.all(w.result.steps == 30)


def test_widget_draws_png_closes_figures_and_has_short_repr():
    n_before = len(plt.get_fignums())
    w = schedule_explorer()
    first = bytes(w.image.value)
    assert first.startswith(b"\x89PNG")
    w.controls["tau"].value = 1.0
    assert w.result.alpha[0] == pytest.approx(0.5)
    assert bytes(w.image.value).startswith(b"\x89PNG") and bytes(w.image.value) != first
    assert len(plt.get_fignums()) == n_before
    assert repr(w).startswith("ScheduleExplorer: Amata(") and "PNG" not in repr(w)
    w.controls["k_min"].value = 20
    assert bytes(w.image.value) == b"" and "invalid settings" in repr(w)


SLIDERS = ("shape", "k_min", "k_max", "tau", "eps", "epochs")


def _ids(snippet):
    return re.findall(r'\bid="([^"]+)"', snippet)


def test_static_explorer_is_self_contained():
    h = static_explorer_html()
    assert "http" not in h and "//cdn" not in h
    assert "src=" not in h and "<link" not in h and "_static" not in h
    assert h.count("<script>") == 1 and h.count("<input type=\"range\"") == len(SLIDERS)
    assert h == static_explorer_html()  # deterministic: no timestamps, no random ids


def test_static_explorer_has_the_sliders_at_the_given_settings():
    h = static_explorer_html("step", k_min=3, k_max=12, tau=0.8, eps=0.25, epochs=7, prefix="ex")
    values = dict(re.findall(r'<input type="range" id="ex-(\w+)"[^>]* value="([^"]+)"', h))
    assert list(values) == list(SLIDERS)
    assert values == {"shape": str(STATIC_SHAPES.index("step")), "k_min": "3", "k_max": "12", "tau": "0.8",
                      "eps": "0.25", "epochs": "7"}
    assert f'max="{SLIDER_RANGES["epochs"][1]}"' in h


@pytest.mark.parametrize("shape, settings", [
    ("linear", {}), ("exponential", {"k_min": 1, "k_max": 16, "tau": 1.0, "eps": 0.3, "epochs": 50}),
    ("step", {"k_min": 3, "k_max": 12, "epochs": 7}), ("constant", {"k_min": 5, "k_max": 7, "epochs": 12}),
])
def test_static_explorer_embeds_the_k_t_of_explore(shape, settings):
    h = static_explorer_html(shape, **settings)
    embedded = re.search(r'id="amata-explorer-steps"[^>]*>([^<]*)<', h).group(1)
    full = {"k_min": 2, "k_max": 10, "tau": 0.5, "eps": 0.2, "epochs": 30, **settings}
    expected = explore(build_schedule(shape, **full), eps=full["eps"], k_ref=full["k_max"]).steps
    assert [int(k) for k in embedded.split(", ")] == expected.tolist()


def test_static_explorer_ids_start_with_the_prefix_and_do_not_clash():
    first, second = static_explorer_html(prefix="one"), static_explorer_html(prefix="two")
    ids_one, ids_two = _ids(first), _ids(second)
    assert len(ids_one) == len(set(ids_one)) and not set(ids_one) & set(ids_two)
    assert all(i == "one" or i.startswith("one-") for i in ids_one)
    assert {f"one-{name}" for name in (*SLIDERS, "summary", "warning", "steps", "alpha", "plot")} <= set(ids_one)


def test_static_shapes_are_the_arithmetic_shapes_of_the_registry():
    assert set(STATIC_SHAPES) <= set(SHAPES) and "optimal" not in STATIC_SHAPES


@pytest.mark.parametrize("kwargs, name", [
    ({"shape": "optimal"}, "shape"), ({"prefix": "1st"}, "prefix"), ({"prefix": 'a" onload="x'}, "prefix"),
    ({"tau": 0.333}, "tau"), ({"eps": 1.5}, "eps"), ({"k_max": 41}, "k_max"), ({"epochs": 201}, "epochs"),
    ({"k_min": 5, "k_max": 3}, "k_min"),
])
def test_static_explorer_rejects_what_its_sliders_cannot_show(kwargs, name):
    with pytest.raises(ValueError, match=name):
        static_explorer_html(**kwargs)
