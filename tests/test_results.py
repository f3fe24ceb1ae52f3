import json
import os

import pytest

from amata_lib.infra.results import ResultError, load_run, save_run

HISTORY = [{"epoch": 1, "time": 0.5, "passes": 33, "clean_acc": 0.9, "robust_acc": float("nan")}]


def test_round_trip_with_provenance(tmp_path):
    path = save_run(tmp_path / "r" / "run.json", config={"method": "amata", "k_min": 2}, history=HISTORY,
                    seed=3, dataset="digits", command="python -m amata_lib train")
    run = load_run(path)
    assert run["config"] == {"method": "amata", "k_min": 2} and run["seed"] == 3
    assert run["history"][0]["robust_acc"] is None  # NaN is not JSON
    prov = run["provenance"]
    for key in ("library_version", "git_commit", "torch_version", "device", "created", "command"):
        assert key in prov
    assert prov["device"].startswith("cpu")


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ('{"schema": "other/1"}', "not an amata run"),
    ("[1, 2]", "JSON object"),
    ('{"schema": "amata-run/1", "provenance": {}, "seed": 0, "dataset": "d", "config": {}, "history": []}',
     "provenance lacks"),
])
def test_corrupt_or_foreign_files_are_rejected(tmp_path, text, match):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(ResultError, match=match):
        load_run(path)


def test_missing_field_is_named(tmp_path):
    path = save_run(tmp_path / "a.json", config={}, history=HISTORY, seed=0, dataset="digits")
    data = json.loads(path.read_text())
    del data["seed"]
    path.write_text(json.dumps(data))
    with pytest.raises(ResultError, match="'seed'"):
        load_run(path)


def test_write_killed_midway_keeps_old_file(tmp_path, monkeypatch):
    path = save_run(tmp_path / "a.json", config={"v": 1}, history=HISTORY, seed=0, dataset="digits")
    before = path.read_text()

    def die(fd):
        raise KeyboardInterrupt  # the process is stopped between writing and renaming

    monkeypatch.setattr(os, "fsync", die)
    with pytest.raises(KeyboardInterrupt):
        save_run(path, config={"v": 2}, history=HISTORY, seed=0, dataset="digits")
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_report_is_stored_when_given(tmp_path):
    path = save_run(tmp_path / "r.json", config={}, history=HISTORY, seed=0, dataset="digits",
                    report={"clean": 0.9, "pgd": 0.5})
    assert load_run(path)["report"] == {"clean": 0.9, "pgd": 0.5}
    plain = save_run(tmp_path / "p.json", config={}, history=HISTORY, seed=0, dataset="digits")
    assert "report" not in load_run(plain)
