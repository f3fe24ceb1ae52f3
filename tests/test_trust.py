"""The command line as a hostile-but-fair user meets it: bad inputs and faults, driven as subprocesses.

Every refused case must exit non-zero with one line on stderr that names the option
or file, print no traceback, and leave no new file behind (and earlier results intact).
"""
import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from amata_lib.cli import main
from amata_lib.infra.results import load_run

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--method", "pgd", "--k", "2", "--epochs", "2", "--train-subset", "200", "--eval-subset", "50",
        "--no-progress"]


def cli(*args, cwd, env=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "amata_lib", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to prove nothing was written or changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused(out, *words):
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr
    assert len(lines) == 1 and lines[0].startswith("amata_lib: error: "), out.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def npz(path: Path, *, n_train=64, n_test=32, shape=(28, 28), **override):
    """A small MNIST-shaped .npz; ``override`` replaces arrays to make it bad."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n_train), "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n_test)}
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def truncated_npz(path: Path):
    npz(path)
    path.write_bytes(path.read_bytes()[:300])


class Evil:
    """Pickles into a call of ``os.system``: loading it unsafely would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_checkpoint(path: Path):
    marker = path.parent / "PWNED"
    torch.save({"schema": "amata-checkpoint/1", "payload": Evil(marker)}, path)


def foreign_checkpoint(path: Path):
    torch.save({"model": {"w": torch.zeros(3)}}, path)


def bad_result(path: Path, **history):
    record = {"schema": "amata-run/1", "provenance": {"library_version": "x", "git_commit": None,
              "torch_version": "x", "device": "cpu", "created": "now"}, "seed": 0, "dataset": "digits",
              "config": {}, "history": [{"epoch": 1, "time": 1.0, "passes": 2, **history}]}
    path.write_text(json.dumps(record))


SETUPS = {
    "truncated.npz": truncated_npz,
    "floats.npz": lambda p: npz(p, x_train=np.full((64, 28, 28), 2.0, np.float32)),
    "nan.npz": lambda p: npz(p, x_test=np.full((32, 28, 28), np.nan, np.float32)),
    "int64.npz": lambda p: npz(p, x_train=np.full((64, 28, 28), 200, np.int64)),
    "flabels.npz": lambda p: npz(p, y_train=np.zeros(64, np.float32)),
    "onehot.npz": lambda p: npz(p, y_train=np.eye(10, dtype=np.int64)[np.zeros(64, int)]),
    "short.npz": lambda p: npz(p, y_train=np.zeros(63, np.int64)),
    "range.npz": lambda p: npz(p, y_test=np.full(32, 12)),
    "negative.npz": lambda p: npz(p, y_test=np.full(32, -1)),
    "emptytest.npz": lambda p: npz(p, n_test=0),
    "nokeys.npz": lambda p: np.savez(p, images=np.zeros(3)),
    "good.npz": npz,
    "trunc.pt": lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"),
    "empty.pt": lambda p: p.write_bytes(b""),
    "foreign.pt": foreign_checkpoint,
    "evil.pt": evil_checkpoint,
    "nonjson.json": lambda p: p.write_text("{not json"),
    "other.json": lambda p: p.write_text(json.dumps({"schema": "something-else/2"})),
    "badpasses.json": lambda p: bad_result(p, passes="many"),
    "nanacc.json": lambda p: bad_result(p, robust_acc="NaN"),
    "badconfig.json": lambda p: p.write_text(json.dumps({"name": "x"})),
    "a-file": lambda p: p.write_text("I am a file, not a folder"),
    "folder": lambda p: p.mkdir(),
}

CASES = [
    # schedule options
    (["train", "--method", "pgd", "--k", "0"], ["--k", ">= 1"]),
    (["schedule", "--method", "pgd", "--k", "0"], ["--k", ">= 1"]),
    (["train", "--epochs", "0"], ["--epochs"]),
    (["train", "--epochs", "abc"], ["--epochs", "invalid int"]),
    (["train", "--eps", "5"], ["--eps", "<= 1"]),
    (["train", "--eps", "nan"], ["--eps"]),
    (["train", "--eps", "-0.1"], ["--eps"]),
    (["train", "--method", "pgd", "--eps", "0"], ["--eps 0", "erm"]),
    (["train", "--method", "amata", "--alpha", "0.1"], ["--alpha is not used by --method 'amata'"]),
    (["train", "--method", "amata", "--k", "5"], ["--k is not used by --method 'amata'"]),
    (["train", "--method", "pgd", "--k-min", "3"], ["--k-min is not used by --method 'pgd'"]),
    (["train", "--method", "pgd", "--alpha", "0.1", "--tau", "0.5"], ["--alpha", "--tau", "not both"]),
    (["train", "--method", "step", "--stages", "2,x"], ["--stages"]),
    (["train", "--method", "step", "--stages", "2,0"], ["--stages[1]", "greater than or equal to 1"]),
    (["train", "--method", "amata", "--k-min", "12"], ["k_min must be <= k_max"]),
    (["train", "--method", "amata", "--rounding", "up"], ["--rounding", "invalid choice"]),
    (["train", "--method", "erm", "--maximizer", "free"], ["method 'erm' trains on clean data"]),
    # maximizer options
    (["train", "--maximizer-arg", "random_start=maybe"], ["random_start must be True or False", "maybe"]),
    (["train", "--maximizer-arg", "random_start"], ["--maximizer-arg must be KEY=VALUE"]),
    (["train", "--maximizer-arg", "steps=3"], ["maximizer 'pgd' has no parameter 'steps'"]),
    (["train", "--maximizer", "yopo", "--maximizer-arg", "layer=conv9"], ["layer 'conv9' is not a submodule"]),
    (["train", "--maximizer", "atta", "--maximizer-arg", "reset=0"], ["reset must be an integer >= 1"]),
    # optimisation and evaluation options
    (["train", "--lr", "0"], ["--lr", "> 0"]),
    (["train", "--momentum", "nan"], ["--momentum"]),
    (["train", "--weight-decay", "nan"], ["--weight-decay"]),
    (["train", "--batch-size", "0"], ["--batch-size"]),
    (["train", "--seed", "-1"], ["--seed"]),
    (["train", "--train-subset", "0"], ["--train-subset", ">= 1"]),
    (["train", "--train-subset", "-1"], ["--train-subset"]),
    (["train", "--eval-subset", "0"], ["--eval-subset", ">= 1"]),
    (["train", "--eval-steps", "0"], ["--eval-steps"]),
    (["train", "--device", "cuda"], ["device 'cuda' is not available"]),
    (["train", "--device", "mps"], ["device 'mps' is not available"]),
    (["train", "--device", "banana"], ["device 'banana' is not a valid torch device"]),
    # data
    (["train", "--data-path", "good.npz"], ["--data-path", "digits is bundled"]),
    (["train", "--dataset", "cifar10", "--data-path", "good.npz"], ["--data-path applies to mnist"]),
    (["train", "--dataset", "mnist", "--data-path", "missing.npz"], ["missing.npz", "is not a file"]),
    (["train", "--dataset", "mnist", "--data-path", "truncated.npz"], ["truncated.npz", "not a readable .npz"]),
    (["train", "--dataset", "mnist", "--data-path", "nokeys.npz"], ["nokeys.npz", "lacks keys"]),
    (["train", "--dataset", "mnist", "--data-path", "floats.npz"], ["floats.npz", "x_train", "[0, 1]", "[2, 2]"]),
    (["train", "--dataset", "mnist", "--data-path", "nan.npz"], ["nan.npz", "x_test", "NaN"]),
    (["train", "--dataset", "mnist", "--data-path", "int64.npz"], ["int64.npz", "uint8"]),
    (["train", "--dataset", "mnist", "--data-path", "flabels.npz"], ["flabels.npz", "labels must be integers"]),
    (["train", "--dataset", "mnist", "--data-path", "onehot.npz"], ["onehot.npz", "1-D", "not one-hot"]),
    (["train", "--dataset", "mnist", "--data-path", "short.npz"], ["short.npz", "63 labels for 64 images"]),
    (["train", "--dataset", "mnist", "--data-path", "range.npz", *FAST], ["test_set labels", "in [0, 10)", "[12, 12]"]),
    (["train", "--dataset", "mnist", "--data-path", "negative.npz"], ["labels", ">= 0"]),
    (["train", "--dataset", "mnist", "--data-path", "emptytest.npz"], ["x_test is empty"]),
    (["train", "--dataset", "mnist", "--data-path", "good.npz", "--model", "digits_cnn", *FAST],
     ["model DigitsCNN cannot take inputs of shape (1, 28, 28)"]),
    # checkpoints that must not be loaded
    (["train", *FAST, "--checkpoint", "trunc.pt"], ["trunc.pt", "damaged or not a checkpoint", "delete it"]),
    (["train", *FAST, "--checkpoint", "empty.pt"], ["empty.pt", "damaged or not a checkpoint"]),
    (["train", *FAST, "--checkpoint", "foreign.pt"], ["foreign.pt", "not an amata_lib checkpoint"]),
    (["train", *FAST, "--checkpoint", "evil.pt"], ["evil.pt", "refused", "would execute"]),
    # output paths, checked before training
    (["train", *FAST, "--out", "same.x", "--checkpoint", "same.x"], ["--out and --checkpoint must be different"]),
    (["train", *FAST, "--out", "a-file/run.json"], ["--out", "a-file/run.json", "cannot be written"]),
    (["train", *FAST, "--out", "folder"], ["--out", "folder", "is a folder"]),
    (["train", *FAST, "--checkpoint", "a-file/run.pt"], ["--checkpoint", "cannot be written"]),
    # results and configs
    (["show", "missing.json"], ["missing.json", "no such file"]),
    (["show", "nonjson.json"], ["nonjson.json", "not valid JSON"]),
    (["show", "other.json"], ["other.json", "not an amata run"]),
    (["show", "badpasses.json"], ["badpasses.json", "history[0].passes"]),
    (["show", "nanacc.json"], ["nanacc.json", "history[0].robust_acc"]),
    (["experiment", "no-such-table"], ["unknown experiment 'no-such-table'"]),
    (["experiment", "badconfig.json"], ["badconfig.json", "lacks"]),
    (["experiment"], ["give an experiment NAME or --list"]),
    (["experiment", "digits-smoke", "--epochs", "0"], ["--epochs"]),
    (["nonsense"], ["invalid choice"]),
]


@pytest.fixture
def workdir(tmp_path):
    for name, make in SETUPS.items():
        make(tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("args, words", CASES, ids=[" ".join(a)[:70] for a, _ in CASES])
def test_bad_input_is_one_clear_line_and_writes_nothing(workdir, args, words):
    before = files(workdir)
    out = cli(*args, cwd=workdir)
    assert_refused(out, *words)
    assert files(workdir) == before  # nothing written, nothing changed, nothing deleted
    assert not (workdir / "PWNED").exists()


def test_at_least_forty_cases():
    assert len(CASES) >= 40


def test_malicious_checkpoint_never_runs_even_at_the_default_path(tmp_path):
    args = ["train", *FAST, "--name", "victim"]
    ckpt = tmp_path / "data" / "checkpoints" / "victim.pt"
    ckpt.parent.mkdir(parents=True)
    evil_checkpoint(ckpt)
    assert_refused(cli(*args, cwd=tmp_path), "victim.pt", "refused")
    assert not (tmp_path / "data" / "checkpoints" / "PWNED").exists()
    assert ckpt.exists()  # kept for the user to inspect, not silently deleted
    assert not (tmp_path / "data" / "results").exists()


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    first = cli("train", *FAST, "--name", "a", "--keep-checkpoint", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    ckpt = tmp_path / "data" / "checkpoints" / "a.pt"
    before = files(tmp_path)
    for change, word in ((["--k", "3"], "plans"), (["--eps", "0.1"], "eps: 0.2 -> 0.1"),
                         (["--epochs", "3"], "epochs: 2 -> 3"), (["--lr", "0.01"], "lr: 0.05 -> 0.01"),
                         (["--seed", "1"], "init_sha256")):
        args = [a for a in FAST]
        for i in range(0, len(change), 2):
            if change[i] in args:
                args[args.index(change[i]) + 1] = change[i + 1]
            else:
                args += change[i:i + 2]
        out = cli("train", *args, "--name", "b", "--checkpoint", str(ckpt), cwd=tmp_path)
        assert_refused(out, "a.pt", "belongs to a run with other settings", word)
        assert files(tmp_path) == before


def test_finished_result_of_other_settings_is_never_overwritten(tmp_path):
    assert cli("train", *FAST, "--name", "r", cwd=tmp_path).returncode == 0
    result = tmp_path / "data" / "results" / "r.json"
    before = files(tmp_path)
    other = [a if a != "2" or i != FAST.index("--k") + 1 else "3" for i, a in enumerate(FAST)]
    assert_refused(cli("train", *other, "--name", "r", cwd=tmp_path), "r.json",
                   "holds a finished run with other settings", "k: 2 -> 3")
    assert files(tmp_path) == before
    same = cli("train", *FAST, "--name", "r", cwd=tmp_path)
    assert same.returncode == 0 and "done already" in same.stdout
    assert files(tmp_path) == before and load_run(result)["history"][-1]["epoch"] == 2


def test_default_names_differ_for_different_settings(tmp_path):
    assert cli("train", *FAST, cwd=tmp_path).returncode == 0
    other = [a if a != "2" or i != FAST.index("--k") + 1 else "3" for i, a in enumerate(FAST)]
    assert cli("train", *other, cwd=tmp_path).returncode == 0
    names = sorted(p.name for p in (tmp_path / "data" / "results").iterdir())
    assert len(names) == 2 and all(n.startswith("digits-pgd-seed0-") for n in names), names


def test_a_second_process_on_the_same_run_is_refused(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    long = ["train", "--method", "pgd", "--k", "5", "--epochs", "50", "--name", "busy", "--no-progress"]
    first = subprocess.Popen([sys.executable, "-m", "amata_lib", *long], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "data" / "checkpoints" / "busy.pt.lock"
    deadline = time.time() + 120
    while not lock.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    try:
        assert lock.exists()
        assert_refused(cli(*long, cwd=tmp_path), "another process is training this run", "busy.pt.lock")
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130 and "Traceback" not in err and "interrupted" in err
    assert not lock.exists()  # released and removed on the way out


def test_ctrl_c_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["train", "--method", "pgd", "--k", "2", "--epochs", "4", "--train-subset", "400", "--eval-subset",
            "50", "--no-progress"]
    assert cli(*args, "--name", "ref", cwd=tmp_path).returncode == 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "amata_lib", *args, "--name", "cut"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "data" / "checkpoints" / "cut.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert cli(*args, "--name", "cut", cwd=tmp_path).returncode == 0
    ref, cut = (load_run(tmp_path / "data" / "results" / f"{n}.json")["history"] for n in ("ref", "cut"))
    drop = ("epoch_time", "time")
    assert [{k: v for k, v in r.items() if k not in drop} for r in ref] == \
           [{k: v for k, v in r.items() if k not in drop} for r in cut]


def test_ctrl_c_during_start_up_prints_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "amata_lib", "train", "--epochs", "1"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.4)  # inside the imports of torch and the library
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err


@pytest.fixture
def tiny_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the simulated full disk test covers this")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_full_disk_keeps_the_old_result_and_leaves_no_debris(tmp_path, tiny_disk):
    old = tiny_disk / "old.json"
    old.write_text('{"old": true}\n')
    with open(tiny_disk / "filler", "wb", buffering=0) as f:  # fill the disk to the last byte
        try:
            while True:
                f.write(b"x" * 1024)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    out = cli("train", *FAST, "--out", str(tiny_disk / "new.json"), "--checkpoint", str(tmp_path / "run.pt"),
              cwd=tmp_path)
    assert_refused(out, "cannot write", "new.json", "No space left on device")
    assert old.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "old.json"]  # no new.json, no temp file


def test_simulated_full_disk_in_process(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *FAST, "--name", "d"]) == 0
    result = tmp_path / "data" / "results" / "d.json"
    before = result.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    capsys.readouterr()
    assert main(["train", *FAST, "--name", "e", "--out", str(result.with_name("e.json"))]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "No space left on device" in err and "Traceback" not in err
    assert sorted(p.name for p in result.parent.iterdir()) == ["d.json"]  # no e.json, no temporary file
    assert not list((tmp_path / "data" / "checkpoints").glob(".*"))
    assert result.read_bytes() == before


def test_results_honour_the_umask(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o027)
    try:
        assert main(["train", *FAST, "--name", "u"]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "data" / "results" / "u.json").stat().st_mode & 0o777 == 0o640


def test_internal_errors_keep_their_traceback(monkeypatch):
    import amata_lib.cli as cli_module

    def broken(a):
        raise ValueError("a bug, not a user mistake")

    monkeypatch.setattr(cli_module, "_cmd_show", broken)
    with pytest.raises(ValueError, match="a bug"):  # not turned into a one-line "error:"
        main(["show", "x.json"])


def test_checkpoint_loads_with_weights_only(tmp_path):
    assert cli("train", *FAST, "--name", "w", "--keep-checkpoint", cwd=tmp_path).returncode == 0
    state = torch.load(tmp_path / "data" / "checkpoints" / "w.pt", weights_only=True)
    assert state["schema"] == "amata-checkpoint/1" and state["settings"]["epochs"] == 2
    with zipfile.ZipFile(tmp_path / "data" / "checkpoints" / "w.pt") as z:  # a torch zip file, no extra code
        assert all(not n.endswith(".py") for n in z.namelist())
    with pytest.raises(pickle.UnpicklingError):
        evil_checkpoint(tmp_path / "e.pt")
        torch.load(tmp_path / "e.pt", weights_only=True)
    assert not (tmp_path / "PWNED").exists()
