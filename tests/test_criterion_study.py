"""The criterion-C study: settings, resume, and the ordering rule fixed before any run."""
import json

import pytest

from amata_lib.infra.results import ResultError
from amata_lib.study.criterion_study import RULE, STRATEGIES, mean_c, ordering_holds, run_study, study_settings

TINY = dict(epochs=1, seeds=(0,), measure_every=1, gammas=(0.0, 1e-3), probe=16, ref_steps=3, k_hi=3,
            alphas=(0.05, 0.1))


def synthetic(cs: dict[str, list[float]], seeds=(0, 1)) -> dict:
    """A stored study whose C (Eq. 14, gamma 0) is cs[strategy][seed] at a single measured epoch."""
    units = [{"strategy": name, "seed": s, "points": [{"eq14": {"0.0": {"c": c[i]}}, "strong": {"0.0": {"c": 0.0}}}]}
             for name, c in cs.items() for i, s in enumerate(seeds)]
    return {"settings": {"seeds": list(seeds), "gammas": [0.0]}, "units": units}


def test_ordering_rule_needs_both_amata_settings_below_every_pgd():
    cs = {"Amata (setting 1)": [0.1, 0.1], "Amata (setting 2)": [0.2, 0.5], "PGD-10": [0.3, 0.4],
          "PGD-20": [0.3, 0.6], "PGD-40": [0.9, 0.9]}
    record = synthetic(cs)
    assert ordering_holds(record) == {0: True, 1: False}  # seed 1: Amata (setting 2) above PGD-10
    assert mean_c(record)["PGD-40"] == {0: 0.9, 1: 0.9}
    del record["units"][-1]  # PGD-40 of seed 1 unfinished: seed 1 is not judged
    assert ordering_holds(record) == {0: True}
    with pytest.raises(ValueError, match="co_state must be"):
        mean_c(record, co_state="paper")
    with pytest.raises(ValueError, match=r"gamma must be one of the study's \[0.0\]"):
        mean_c(record, gamma=0.04)
    assert "Fixed before any run" in RULE and len(STRATEGIES) == 5


@pytest.mark.parametrize("kwargs, match", [
    (dict(seeds=()), "seeds must be distinct"), (dict(seeds=(1, 1)), "seeds must be distinct"),
    (dict(gammas=(-1.0,)), "gammas must be numbers >= 0"), (dict(epochs=5, measure_every=6), "measure_every"),
    (dict(epochs=0), "epochs"),
])
def test_bad_settings_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        study_settings(**kwargs)


@pytest.fixture
def small_digits(monkeypatch, digits):
    """The study on the first 256 training and 100 test digits (two minibatches per epoch, instead of 11 with
    the 5 strategies' up to 40 steps each): what the tiny study checks does not depend on the data's size."""
    from torch.utils.data import TensorDataset

    import amata_lib.study.criterion_study as study
    train_set, test_set = digits
    small = (TensorDataset(*(t[:256] for t in train_set.tensors)), TensorDataset(*(t[:100] for t in test_set.tensors)))
    monkeypatch.setattr(study, "load", lambda name: small)  # the study's dataset is always "digits"


def test_tiny_study_runs_resumes_and_refuses_other_settings(tmp_path, small_digits):
    out = tmp_path / "study.json"
    lines = []
    record = run_study(out, log=lines.append, command="test", **TINY)
    assert {u["strategy"] for u in record["units"]} == set(STRATEGIES)
    point = record["units"][0]["points"][0]
    assert point["epoch"] == 1 and set(point["eq14"]) == {"0.0", "0.001"} and point["strong"]["0.0"]["c"] >= 0
    assert point["strong_passes"] == point["eq14_passes"] + 2
    stored = json.loads(out.read_text())
    assert stored["provenance"]["command"] == "test" and stored["settings"]["rule"] == RULE
    again = []
    assert run_study(out, log=again.append, **TINY)["units"] == stored["units"]  # nothing retrained
    assert again == []
    with pytest.raises(ResultError, match="other settings"):
        run_study(out, log=None, **dict(TINY, epochs=2))


def test_cli_criterion_help_and_bad_input_without_traceback(tmp_path, cli_main):
    ok = cli_main("criterion", "--help")
    assert ok.returncode == 0 and "--measure-every" in ok.stdout and "resumes" in ok.stdout
    for args, message in ((["--seeds", "1,1"], "seeds must be distinct"), (["--gammas", "a,b"], "comma-separated"),
                          (["--epochs", "5", "--measure-every", "6"], "measure_every must be <= epochs")):
        bad = cli_main("criterion", "--out", tmp_path / "s.json", *args)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert not (tmp_path / "s.json").exists()
