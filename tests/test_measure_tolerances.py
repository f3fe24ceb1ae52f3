"""scripts/measure_tolerances.py: draws of another machine are added to the stored ones, never replace them."""
import pytest

from scripts import measure_tolerances as mt  # the repository root is on sys.path (its conftest.py)


def _check(values, tol=1.5):
    return {"stored": 42.5, "tol": tol, "rel": None, "unit": "points", "values": values}


def test_a_second_machines_draws_join_the_first_and_the_tightness_is_judged_over_all():
    old = {"provenance": {"machine": "a"}, "seconds": {"avx2": {"wall": 1.0, "cpu": 1.0}},
           "checks": mt.summarise({"cw": _check({"avx2": 42.0, "default": 42.5})})}
    assert not old["checks"]["cw"]["tight"]  # 0.5 away: 2.5 x 0.5 <= 1.5
    new = {"cw": _check({"b:native": 41.5, "b:default": 39.0})}
    merged = mt.merge_draws(old, new)
    assert merged["cw"]["values"] == {"avx2": 42.0, "default": 42.5, "b:native": 41.5, "b:default": 39.0}
    entry = mt.chapter_entry(old, {"machine": "b"}, {"b:native": {"wall": 2.0, "cpu": 2.0}}, merged)
    cw = entry["checks"]["cw"]
    assert cw["max_deviation"] == pytest.approx(3.5) and cw["tight"] and cw["suggested"] == 9.0
    assert entry["provenance"] == {"machine": "a"} and entry["more_provenance"] == [{"machine": "b"}]
    assert set(entry["seconds"]) == {"avx2", "b:native"}


def test_a_draw_already_stored_under_the_same_name_is_refused():
    old = {"checks": {"cw": _check({"b:native": 41.5})}}
    with pytest.raises(SystemExit, match="choose another --machine tag"):
        mt.merge_draws(old, {"cw": _check({"b:native": 40.0})})


def test_machine_needs_an_output_file_to_add_to(capsys):
    with pytest.raises(SystemExit):
        mt.main(["--machine", "b"])
    assert "--machine needs --out" in capsys.readouterr().err
