"""measure_plans: several inner plans against one reference attack, as measure_inner measures each alone."""
import torch

from amata_lib.core.schedules import Plan
from amata_lib.study.convergence import measure_inner, measure_plans


def test_measure_plans_equals_measure_inner_plan_by_plan(pgd_model, digits):
    model, _ = pgd_model
    x, y = digits[0].tensors[0][:64], digits[0].tensors[1][:64]
    plans = {"PGD-1": Plan(1, 0.5), "PGD-5": Plan(5, 0.1)}
    state = torch.get_rng_state()
    together = measure_plans(model, x, y, eps=0.2, plans=plans, ref_steps=20)
    assert torch.equal(torch.get_rng_state(), state)
    for name, plan in plans.items():
        assert together[name] == measure_inner(model, x, y, eps=0.2, plan=plan, ref_steps=20)
    assert together["PGD-1"]["loss_gap"] > together["PGD-5"]["loss_gap"]
