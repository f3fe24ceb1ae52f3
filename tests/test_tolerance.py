"""The chapters' check of a live number against the stored run (amata_lib.book.tolerance)."""
import json

import pytest

from amata_lib.book.tolerance import RECORD, check_close, tolerance_text


def test_the_line_shows_the_stored_value_and_the_tolerance_never_the_live_value(capsys, monkeypatch):
    monkeypatch.delenv(RECORD, raising=False)
    for live in (53.0, 50.5, 56.0, 49.0):
        check_close("PGD-2 accuracy", live, stored=53.0, tol=4, unit="%", tol_unit="points")
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["PGD-2 accuracy: 53 % ± 4 points (stored run: 53.0 %), within tolerance"] * 4


def test_outside_the_tolerance_fails_with_both_values(monkeypatch):
    monkeypatch.delenv(RECORD, raising=False)
    with pytest.raises(AssertionError, match=r"gives 57\.5 %, outside the stored run's 53 % ± 4 points"):
        check_close("PGD-2 accuracy", 57.5, stored=53.0, tol=4, unit="%", tol_unit="points")
    with pytest.raises(AssertionError):
        check_close("x", float("nan"), stored=1.0, tol=1)
    with pytest.raises(AssertionError):
        check_close("loss", 1.3, stored=1.0, rel=0.25)
    check_close("loss", 0.76, stored=1.0, rel=0.25)  # the bound itself is inside


def test_relative_tolerance_text():
    assert tolerance_text(0.181, rel=0.2) == "0.18 ± 20 % (stored run: 0.1810)"
    assert tolerance_text(97.66, rel=0.25) == "98 ± 25 % (stored run: 97.66)"
    assert tolerance_text(2.36, tol=0.05, digits=2) == "2.36 ± 0.05 (stored run: 2.36)"
    assert tolerance_text(0.33, tol=0.1, digits=2) == "0.3 ± 0.1 (stored run: 0.33)"


def test_exactly_one_kind_of_tolerance():
    with pytest.raises(ValueError):
        tolerance_text(1.0)
    with pytest.raises(ValueError):
        tolerance_text(1.0, tol=1, rel=0.1)
    with pytest.raises(ValueError):
        tolerance_text(1.0, tol=0)


def test_recording_appends_the_live_value_and_does_not_raise(tmp_path, monkeypatch, capsys):
    path = tmp_path / "values.jsonl"
    monkeypatch.setenv(RECORD, str(path))
    check_close("a", 52.5, stored=53.0, tol=4, unit="%")
    check_close("b", 70.0, stored=53.0, tol=4, unit="%")  # outside: recorded, not raised
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["label"], r["value"], r["within"]) for r in rows] == [("a", 52.5, True), ("b", 70.0, False)]
    assert "OUTSIDE" in capsys.readouterr().out.splitlines()[1]


def test_table_prints_the_stored_table_and_checks_every_entry(capsys, monkeypatch):
    from amata_lib.book.tolerance import check_table
    monkeypatch.delenv(RECORD, raising=False)
    stored = {"0.01": [0.06, 1.73], "0.1": [0.06, 10.13]}
    for live in ({"0.01": [0.06, 1.70], "0.1": [0.061, 10.4]}, stored):
        check_table("loss after k steps", ["k=0", "k=10"], live, stored, tol=0.05, rel=0.05)
    out = capsys.readouterr().out
    first, second = out[:len(out) // 2], out[len(out) // 2:]
    assert first == second and "0.01        0.06    1.73" in first
    assert "this run: all 4 entries within tolerance" in first
    with pytest.raises(AssertionError, match=r"1 of 4 entries outside.*0\.1 / k=10: 11"):
        check_table("loss after k steps", ["k=0", "k=10"], {"0.01": [0.06, 1.73], "0.1": [0.06, 11.0]}, stored,
                    tol=0.05, rel=0.05)
    with pytest.raises(ValueError):
        check_table("t", ["a"], {"r": [1.0]}, {"r": [1.0, 2.0]}, tol=1)


def test_table_with_one_tolerance_per_column(capsys, monkeypatch):
    from amata_lib.book.tolerance import check_table
    monkeypatch.delenv(RECORD, raising=False)
    stored = {"PGD-40": [1.80, 68.0]}
    check_table("epoch 30", ["loss", "off-plane %"], {"PGD-40": [1.7, 70.0]}, stored, tol=[0.2, 5], fmt=".2f")
    assert "tolerance by column: loss ± 0.2, off-plane % ± 5" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="off-plane"):
        check_table("epoch 30", ["loss", "off-plane %"], {"PGD-40": [1.7, 80.0]}, stored, tol=[0.2, 5])


def test_stored_run_reads_values_by_label(tmp_path, monkeypatch):
    from amata_lib.book.tolerance import StoredRun
    path = tmp_path / "stored.json"
    path.write_text(json.dumps({"chapters": {"02_amata": {"a": 53.0, "t | r | c": 1.5}}}))
    stored = StoredRun(path, "02_amata")
    assert stored["a"] == 53.0 and stored.table("t", ["r"], ["c"]) == {"r": [1.5]}
    monkeypatch.delenv(RECORD, raising=False)
    with pytest.raises(KeyError, match="measure_tolerances.py --store book/02_amata.ipynb"):
        stored["b"]
    monkeypatch.setenv(RECORD, str(tmp_path / "rec.jsonl"))
    assert stored["b"] != stored["b"]  # NaN while recording a new label
