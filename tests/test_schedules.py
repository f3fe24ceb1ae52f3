import math

import pytest

from amata_lib import Amata, Constant, Exponential, FromFunction, Plan, Step
from amata_lib.core.schedules import relative_cost


def test_amata_matches_algorithm_1():
    s = Amata(k_min=2, k_max=10, tau=0.5, epochs=30)
    for t in (0, 7, 15, 29):
        k_real = 2 + (10 - 2) * t / 30
        k = math.floor(k_real + 0.5)
        assert s(t) == Plan(k, 0.5 / k)
    assert s(0) == Plan(2, 0.25)
    assert s(29).steps == 10  # 9.73 rounds up: the last epoch reaches K_max
    assert [p.steps for p in s.plans()] == sorted(p.steps for p in s.plans())


def test_amata_travel_is_tau_every_epoch():
    s = Amata(5, 40, 0.75, 20)
    assert all(math.isclose(p.steps * p.alpha, 0.75) for p in s.plans())


@pytest.mark.parametrize("rounding, last", [("floor", 9), ("round", 10), ("ceil", 10)])
def test_rounding_at_last_epoch(rounding, last):
    s = Amata(2, 10, 1.0, 30, rounding=rounding)
    assert s(29).steps == last
    assert s(0).steps == 2


def test_floor_never_reaches_k_max():
    s = Amata(2, 10, 1.0, 30, rounding="floor")
    assert max(p.steps for p in s.plans()) == 9
    assert s.max_steps == 9 and s.k_max == 10


def test_round_is_half_up_not_bankers():
    s = Amata(2, 4, 1.0, 4)  # real K_t = 2, 2.5, 3, 3.5
    assert [p.steps for p in s.plans()] == [2, 3, 3, 4]


def test_exponential_interpolates_geometrically():
    s = Exponential(2, 32, 1.0, 4)  # 2 * 16 ** (t / 4) = 2, 4, 8, 16
    assert [p.steps for p in s.plans()] == [2, 4, 8, 16]
    lin = Amata(2, 32, 1.0, 4)
    assert s.cost() < lin.cost()


def test_step_stages():
    s = Step([2, 5, 10], tau=1.0, epochs=7)
    assert [p.steps for p in s.plans()] == [2, 2, 2, 5, 5, 10, 10]
    assert s(6).alpha == pytest.approx(0.1)


def test_constant_and_costs_add_up():
    c = Constant(10, 0.05, 30)
    assert c(0) == c(29) == Plan(10, 0.05)
    assert c.cost() == 30 * 11
    assert relative_cost(c) == 1.0
    a = Amata(2, 10, 0.5, 30)
    assert a.cost() == sum(p.steps + 1 for p in a.plans())
    assert relative_cost(a) == pytest.approx(a.cost() / (11 * 30))
    assert relative_cost(a, k_ref=40) == pytest.approx(a.cost() / (41 * 30))
    assert Plan(7, 0.1).passes == 8


def test_from_function():
    s = FromFunction(lambda t: (t + 1, 1.0 / (t + 1)), epochs=3)
    assert s(2) == Plan(3, 1 / 3)
    with pytest.raises(ValueError, match="steps at t=0"):
        FromFunction(lambda t: (0, 1.0), epochs=2)(0)
    with pytest.raises(ValueError, match="Plan or"):
        FromFunction(lambda t: 5, epochs=2)(0)


@pytest.mark.parametrize("build, name", [
    (lambda: Amata(10, 2, 1.0, 10), "k_min"),
    (lambda: Amata(0, 2, 1.0, 10), "k_min"),
    (lambda: Amata(2, 2.5, 1.0, 10), "k_max"),
    (lambda: Amata(2, 10, 0.0, 10), "tau"),
    (lambda: Amata(2, 10, -1.0, 10), "tau"),
    (lambda: Amata(2, 10, float("nan"), 10), "tau"),
    (lambda: Amata(2, 10, float("inf"), 10), "tau"),
    (lambda: Amata(2, 10, 1.0, 0), "epochs"),
    (lambda: Amata(2, 10, 1.0, 10, rounding="nearest"), "rounding"),
    (lambda: Exponential(2, float("nan"), 1.0, 10), "k_max"),
    (lambda: Constant(0, 0.1, 10), "steps"),
    (lambda: Constant(3, -0.1, 10), "alpha"),
    (lambda: Step([], 1.0, 10), "steps"),
    (lambda: Step([2, 0], 1.0, 10), r"steps\[1\]"),
    (lambda: Plan(True, 0.1), "steps"),
])
def test_bad_parameters_raise_naming_parameter(build, name):
    with pytest.raises(ValueError, match=name):
        build()


@pytest.mark.parametrize("t", [-1, 10, 2.0, None])
def test_epoch_out_of_range(t):
    with pytest.raises(ValueError, match=r"t must be .* \[0, 9\]"):
        Amata(2, 10, 1.0, 10)(t)


def test_error_message_names_value():
    with pytest.raises(ValueError, match=r"k_min=10 > k_max=2"):
        Amata(10, 2, 1.0, 5)
