"""The command line as a hostile-but-fair user meets it: bad inputs and faults.

Driven in-process (``cli_main`` of tests/conftest.py: ``main(argv)`` with its exit code, stdout and stderr)
except where a test needs a real process: a second process holding a lock, Ctrl-C, a closed pipe.

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


def sigint_as_a_user_sends_it():
    """In the child before exec: SIGINT back to its default. A pytest-xdist worker ignores SIGINT, and an ignored
    signal stays ignored across exec, so without this a child started by a worker would never see Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
def test_bad_input_is_one_clear_line_and_writes_nothing(workdir, cli_main, args, words):
    before = files(workdir)
    out = cli_main(*args, cwd=workdir)
    assert_refused(out, *words)
    assert files(workdir) == before  # nothing written, nothing changed, nothing deleted
    assert not (workdir / "PWNED").exists()


def test_at_least_forty_cases():
    assert len(CASES) >= 40


def test_malicious_checkpoint_never_runs_even_at_the_default_path(tmp_path, cli_main):
    args = ["train", *FAST, "--name", "victim"]
    ckpt = tmp_path / "data" / "checkpoints" / "victim.pt"
    ckpt.parent.mkdir(parents=True)
    evil_checkpoint(ckpt)
    assert_refused(cli_main(*args, cwd=tmp_path), "victim.pt", "refused")
    assert not (tmp_path / "data" / "checkpoints" / "PWNED").exists()
    assert ckpt.exists()  # kept for the user to inspect, not silently deleted
    assert not (tmp_path / "data" / "results").exists()


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path, cli_main):
    first = cli_main("train", *FAST, "--name", "a", "--keep-checkpoint", cwd=tmp_path)
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
        out = cli_main("train", *args, "--name", "b", "--checkpoint", str(ckpt), cwd=tmp_path)
        assert_refused(out, "a.pt", "belongs to a run with other settings", word)
        assert files(tmp_path) == before


def test_finished_result_of_other_settings_is_never_overwritten(tmp_path, cli_main):
    assert cli_main("train", *FAST, "--name", "r", cwd=tmp_path).returncode == 0
    result = tmp_path / "data" / "results" / "r.json"
    before = files(tmp_path)
    other = [a if a != "2" or i != FAST.index("--k") + 1 else "3" for i, a in enumerate(FAST)]
    assert_refused(cli_main("train", *other, "--name", "r", cwd=tmp_path), "r.json",
                   "holds a finished run with other settings", "k: 2 -> 3")
    assert files(tmp_path) == before
    same = cli_main("train", *FAST, "--name", "r", cwd=tmp_path)
    assert same.returncode == 0 and "done already" in same.stdout
    assert files(tmp_path) == before and load_run(result)["history"][-1]["epoch"] == 2


def test_default_names_differ_for_different_settings(tmp_path, cli_main):
    assert cli_main("train", *FAST, cwd=tmp_path).returncode == 0
    other = [a if a != "2" or i != FAST.index("--k") + 1 else "3" for i, a in enumerate(FAST)]
    assert cli_main("train", *other, cwd=tmp_path).returncode == 0
    names = sorted(p.name for p in (tmp_path / "data" / "results").iterdir())
    assert len(names) == 2 and all(n.startswith("digits-pgd-seed0-") for n in names), names


@pytest.mark.slow
def test_a_second_process_on_the_same_run_is_refused(tmp_path, cli_main):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    long = ["train", "--method", "pgd", "--k", "5", "--epochs", "50", "--name", "busy", "--no-progress"]
    first = subprocess.Popen([sys.executable, "-m", "amata_lib", *long], cwd=tmp_path, env=env,
                             preexec_fn=sigint_as_a_user_sends_it,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "data" / "checkpoints" / "busy.pt.lock"
    deadline = time.time() + 120
    while not lock.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    try:
        assert lock.exists()
        assert_refused(cli_main(*long, cwd=tmp_path), "another process is training this run", "busy.pt.lock")
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130 and "Traceback" not in err and "interrupted" in err
    assert not lock.exists()  # released and removed on the way out


@pytest.mark.slow
def test_ctrl_c_resumes_to_the_uninterrupted_result(tmp_path, cli_main, one_thread):
    args = ["train", "--method", "pgd", "--k", "2", "--epochs", "4", "--train-subset", "400", "--eval-subset",
            "50", "--no-progress"]
    assert cli_main(*args, "--name", "ref", cwd=tmp_path).returncode == 0
    env = one_thread  # the reference ran here on one thread: the child must compute the same, bit for bit
    proc = subprocess.Popen([sys.executable, "-m", "amata_lib", *args, "--name", "cut"], cwd=tmp_path, env=env,
                             preexec_fn=sigint_as_a_user_sends_it,
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
    assert cli_main(*args, "--name", "cut", cwd=tmp_path).returncode == 0
    ref, cut = (load_run(tmp_path / "data" / "results" / f"{n}.json")["history"] for n in ("ref", "cut"))
    drop = ("epoch_time", "time")
    assert [{k: v for k, v in r.items() if k not in drop} for r in ref] == \
           [{k: v for k, v in r.items() if k not in drop} for r in cut]


@pytest.mark.slow
def test_ctrl_c_during_start_up_prints_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "amata_lib", "train", "--epochs", "1"], cwd=tmp_path, env=env,
                             preexec_fn=sigint_as_a_user_sends_it,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.4)  # inside the imports of torch and the library
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err


def mounted_tmpfs(folder: Path, options: str, why: str):
    """Mount a 64 KiB tmpfs with ``options`` on the new ``folder``, yield it, unmount; skip with ``why`` where
    mounting is impossible (not root, no ``mount``)."""
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"{options}size=64k", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip(why)
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def tiny_disk(tmp_path):
    yield from mounted_tmpfs(tmp_path / "disk", "",
                             "cannot mount a tmpfs here (needs root); the simulated full disk test covers this")


def test_full_disk_keeps_the_old_result_and_leaves_no_debris(tmp_path, tiny_disk, cli_main):
    old = tiny_disk / "old.json"
    old.write_text('{"old": true}\n')
    with open(tiny_disk / "filler", "wb", buffering=0) as f:  # fill the disk to the last byte
        try:
            while True:
                f.write(b"x" * 1024)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    out = cli_main("train", *FAST, "--out", str(tiny_disk / "new.json"), "--checkpoint", str(tmp_path / "run.pt"),
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


def test_checkpoint_loads_with_weights_only(tmp_path, cli_main):
    assert cli_main("train", *FAST, "--name", "w", "--keep-checkpoint", cwd=tmp_path).returncode == 0
    state = torch.load(tmp_path / "data" / "checkpoints" / "w.pt", weights_only=True)
    assert state["schema"] == "amata-checkpoint/1" and state["settings"]["epochs"] == 2
    with zipfile.ZipFile(tmp_path / "data" / "checkpoints" / "w.pt") as z:  # a torch zip file, no extra code
        assert all(not n.endswith(".py") for n in z.namelist())
    with pytest.raises(pickle.UnpicklingError):
        evil_checkpoint(tmp_path / "e.pt")
        torch.load(tmp_path / "e.pt", weights_only=True)
    assert not (tmp_path / "PWNED").exists()


# ============================================================================ hardening round two (issue 28)
#
# Driven in-process (``main([...])`` with capsys) wherever no real process is needed; only the broken pipe
# runs a subprocess. Every training is tiny: 1 epoch, 64 training and 20 test examples.

STORED = ROOT / "data" / "results"
TINY = ["--method", "pgd", "--k", "2", "--epochs", "1", "--train-subset", "64", "--eval-subset", "20",
        "--no-progress"]
LONG = "n" * 300  # longer than any file name the file system allows (255 bytes)


def run_cli(capsys, *args):
    """``main(args)`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def refused_here(capsys, *args, words=()):
    """``main(args)`` exits 2 with one ``amata_lib: error:`` line holding ``words`` and no traceback."""
    code, out, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2, (code, out[-1000:], err[-2000:])
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("amata_lib: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def tiny_config(path: Path, *, name="tiny", dataset="digits", **changes) -> Path:
    """A one-row experiment config that trains in seconds (digits or an MNIST-like .npz)."""
    cfg = {"name": name, "version": 1, "description": "a tiny experiment of the tests", "dataset": dataset,
           "model": "digits_cnn" if dataset == "digits" else "mnist_small", "eps": 0.2, "epochs": 1,
           "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "lr_schedule": "constant", "momentum": 0.9,
           "weight_decay": 5e-4, "seed": 0,
           "eval": {"pgd_steps": 2, "pgd_restarts": 1, "cw_steps": 2, "autoattack_n": 10, "every": 1, "subset": 20,
                    "autoattack_attacks": ["apgd-ce"]},
           "runs": [{"name": "pgd-2", "method": "pgd", "k": 2, "alpha": 0.25, "maximizer": "pgd"}], "choices": []}
    cfg.update(changes)
    path.write_text(json.dumps(cfg))
    return path


def no_training(monkeypatch):
    """Make any training fail the test: a refusal must come before it."""
    import amata_lib.experiments as experiments
    import amata_lib.spec as spec_module

    def trained(*args, **kwargs):
        raise AssertionError("training started although the run had to be refused before it")

    monkeypatch.setattr(experiments, "spec_run", trained)
    monkeypatch.setattr(spec_module, "train", trained)


def stored_copy(tmp_path: Path, *experiments: str) -> Path:
    """A copy of stored results (``data/results/EXP``) to edit."""
    out = tmp_path / "results"
    for name in experiments:
        shutil.copytree(STORED / name, out / name)
    return out


def edit_json(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))  # NaN and Infinity as JSON's non-standard literals


# ---------------------------------------------------------------------------- 1. a finished result is never lost

def test_r2_train_does_not_overwrite_a_result_another_run_finished_meanwhile(tmp_path, monkeypatch, capsys):
    """Two runs of other settings, one --out, two checkpoints: the one that finishes last is refused at the
    write, the other's result stays, and its own trained model stays in its checkpoint to be stored elsewhere."""
    import amata_lib.spec as spec_module
    monkeypatch.chdir(tmp_path)
    real, raced = spec_module.run, []

    def racing(*args, **kwargs):
        if not raced:  # while this run trains, another one (k 3) finishes and writes r.json
            raced.append(1)
            other = [a if a != "2" else "3" for a in TINY]
            assert main(["train", *other, "--out", "r.json", "--checkpoint", "b.pt"]) == 0
        return real(*args, **kwargs)

    monkeypatch.setattr(spec_module, "run", racing)
    refused_here(capsys, "train", *TINY, "--out", "r.json", "--checkpoint", "a.pt",
                 words=["r.json", "holds a finished run with other settings", "k: 3 -> 2", "a.pt"])
    assert load_run(tmp_path / "r.json")["config"]["run"]["k"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "r.json"]  # no temporary or lock file
    code, out, _ = run_cli(capsys, "train", *TINY, "--out", "s.json", "--checkpoint", "a.pt")
    assert code == 0 and "epoch   1/1" not in out  # stored from the kept checkpoint, not trained again
    assert load_run(tmp_path / "s.json")["config"]["run"]["k"] == 2


def test_r2_experiment_does_not_overwrite_a_result_another_run_finished_meanwhile(tmp_path, monkeypatch, capsys):
    import amata_lib.experiments as experiments
    from amata_lib.infra.results import save_run
    monkeypatch.chdir(tmp_path)
    mine = tiny_config(tmp_path / "mine.json")
    other = tiny_config(tmp_path / "other.json", lr=0.01)  # the same name, other settings
    real = experiments.spec_run

    def racing(spec, **kwargs):  # the other config's run finishes first, into the same --out-dir
        cfg, overrides = experiments.with_overrides(experiments.load_config(str(other)), train_subset=64)
        run = cfg["runs"][0]
        config = experiments.run_record_config(cfg, run, overrides, str(other))
        config["data_sha256"] = None
        out = experiments.seed_folder("data/results", cfg, overrides) / "pgd-2.json"
        save_run(out, config=config, history=[{"epoch": 1, "time": 1.0, "passes": 3, "clean_acc": 0.5,
                                               "robust_acc": 0.1}], seed=0, dataset="digits")
        return real(spec, **kwargs)

    monkeypatch.setattr(experiments, "spec_run", racing)
    result = tmp_path / "data" / "results" / "tiny-reduced" / "seed0" / "pgd-2.json"
    refused_here(capsys, "experiment", mine, "--train-subset", "64",
                 words=["pgd-2.json", "holds a finished run with other settings", "lr: 0.01 -> 0.05", "pgd-2.pt"])
    assert load_run(result)["config"]["lr"] == 0.01
    assert sorted(p.name for p in result.parent.iterdir()) == ["pgd-2.json"]


def test_r2_a_result_is_written_under_a_lock_on_its_path(tmp_path):
    """save_run waits for the lock ``PATH.lock`` and re-checks the settings under it, just before the replace."""
    import threading

    from amata_lib.infra.checkpoints import RunLock
    from amata_lib.infra.results import ResultError, save_run
    path = tmp_path / "r.json"
    history = [{"epoch": 1, "time": 1.0, "passes": 2}]
    done = []
    with RunLock(path):
        writer = threading.Thread(target=lambda: done.append(save_run(path, config={"k": 1}, history=history,
                                                                      seed=0, dataset="digits")))
        writer.start()
        time.sleep(0.5)
        assert not path.exists() and not done  # waits for the lock
    writer.join(timeout=30)
    assert done and load_run(path)["config"] == {"k": 1}
    with pytest.raises(ResultError, match="other settings"):
        save_run(path, config={"k": 2}, history=history, seed=0, dataset="digits")
    assert load_run(path)["config"] == {"k": 1}
    save_run(path, config={"k": 1}, history=history, seed=0, dataset="digits")  # the same run may write again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


# ---------------------------------------------------------------------------- 2. runs on other data are not done

@pytest.fixture(scope="module")
def mnist_experiment(tmp_path_factory):
    """A finished tiny experiment on one MNIST-like .npz (a.npz); b.npz holds other images of the same shape.

    Its report is marked as suspect of gradient masking, to see the warning in the log and the table."""
    import amata_lib.experiments as experiments
    folder = tmp_path_factory.mktemp("mnist")
    npz(folder / "a.npz")
    rng = np.random.default_rng(1)
    npz(folder / "b.npz", x_train=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8))
    tiny_config(folder / "tiny.json", dataset="mnist")
    real, log = experiments.final_report, []

    def suspect(*args, **kwargs):
        report = real(*args, **kwargs)
        report.update(gradient_masking_suspect=True, masking_reasons=["a test says so"])
        return report

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiments, "final_report", suspect)
        mp.delenv("AMATA_MNIST", raising=False)
        mp.chdir(folder)  # the config file is stored by the name it is given
        experiments.run_experiment("tiny.json", train_subset=64, data_path="a.npz", out_dir="results",
                                   checkpoint_dir="ckpt", log=log.append)
    return folder, log


def test_r2_experiment_on_other_data_is_refused_not_done_already(mnist_experiment, monkeypatch, capsys):
    folder, _ = mnist_experiment
    monkeypatch.chdir(folder)
    monkeypatch.delenv("AMATA_MNIST", raising=False)
    no_training(monkeypatch)
    before = files(folder)
    args = ["experiment", "tiny.json", "--train-subset", "64", "--out-dir", "results", "--checkpoint-dir", "ckpt"]
    code, out, _ = run_cli(capsys, *args, "--data-path", "a.npz")
    assert code == 0 and "done already" in out
    refused_here(capsys, *args, "--data-path", "b.npz", words=["pgd-2.json", "other data", "data_sha256"])
    monkeypatch.setenv("AMATA_MNIST", "b.npz")
    refused_here(capsys, *args, words=["pgd-2.json", "other data", "data_sha256"])
    assert files(folder) == before


# ---------------------------------------------------------------------------- 3. results must be sane to be read

def _set(path: tuple, value):
    def change(record):
        target = record
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _decreasing(key):
    def change(record):
        record["history"][2][key] = record["history"][1][key] - 1
    return change


INSANE = {
    "report.pgd 5.0": (_set(("report", "pgd"), 5.0), ["report.pgd", "[0, 1]", "5.0"]),
    "report.clean -0.1": (_set(("report", "clean"), -0.1), ["report.clean", "[0, 1]"]),
    "report.autoattack inf": (_set(("report", "autoattack"), float("inf")), ["report.autoattack"]),
    "negative passes": (_set(("history", 0, "passes"), -5), ["history[0].passes", ">= 0"]),
    "negative time": (_set(("history", 0, "time"), -1.0), ["history[0].time", ">= 0"]),
    "passes decrease": (_decreasing("passes"), ["history[2].passes", "decrease"]),
    "time decreases": (_decreasing("time"), ["history[2].time", "decrease"]),
    "infinite robust_acc": (_set(("history", 1, "robust_acc"), float("inf")), ["history[1].robust_acc", "[0, 1]"]),
    "NaN clean_acc": (_set(("history", 1, "clean_acc"), float("nan")), ["history[1].clean_acc"]),
    "fgsm_acc 1.5": (_set(("history", 1, "fgsm_acc"), 1.5), ["history[1].fgsm_acc", "[0, 1]"]),
    "report is text": (_set(("report",), "excellent"), ["report", "object"]),
    "report.pgd is text": (_set(("report", "pgd"), "high"), ["report.pgd"]),
    "suspect flag is text": (_set(("report", "gradient_masking_suspect"), "no"), ["report.gradient_masking_suspect"]),
    "masking reasons a number": (_set(("report", "masking_reasons"), 5), ["report.masking_reasons"]),
    "warm-up is text": (_set(("report", "warmup"), "short"), ["report.warmup"]),
    "warm-up passes negative": (_set(("report", "warmup"), {"epochs": 1, "time": 1.0, "passes": -3}),
                                ["report.warmup.passes"]),
}


@pytest.mark.parametrize("case", list(INSANE), ids=list(INSANE))
def test_r2_insane_results_are_refused_with_the_file_named(tmp_path, capsys, case):
    change, words = INSANE[case]
    path = tmp_path / "run.json"
    shutil.copy(STORED / "digits-verdict" / "seed0" / "pgd-10.json", path)
    edit_json(path, change)
    refused_here(capsys, "show", path, words=[str(path), *words])


def test_r2_a_verdict_refuses_an_insane_or_misplaced_file(tmp_path, capsys):
    results = stored_copy(tmp_path, "digits-verdict")
    args = ["experiment", "digits-verdict", "--verdict", "--out-dir", results]
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "reference" in out
    victim = results / "digits-verdict" / "seed3" / "pgd-10.json"
    original = victim.read_bytes()
    for change, words in ((_set(("report", "pgd"), 5.0), ["report.pgd"]),
                          (_set(("report", "pgd"), "high"), ["report.pgd"]),
                          (_set(("history", 2, "passes"), -1), ["history[2].passes"]),
                          (_set(("config", "data_sha256"), "0" * 64), ["other data", "data_sha256"])):
        edit_json(victim, change)
        refused_here(capsys, *args, words=[str(victim), *words])
        victim.write_bytes(original)
    # a copy of MNIST's PGD-10 placed as digits' PGD-10; a seed-0 file in the seed-3 folder
    shutil.copy(STORED / "mnist-verdict-10k" / "seed0" / "pgd-10.json", victim)
    refused_here(capsys, *args, words=[str(victim), "experiment 'mnist-verdict-10k', not 'digits-verdict'"])
    shutil.copy(results / "digits-verdict" / "seed0" / "pgd-10.json", victim)
    refused_here(capsys, *args, words=[str(victim), "seed 0, not 3"])


def test_r2_the_chapters_loader_refuses_foreign_and_insane_files(tmp_path):
    from amata_lib.experiments import load_config, load_results
    from amata_lib.infra.results import ResultError
    results = stored_copy(tmp_path, "digits-verdict")
    folder = results / "digits-verdict" / "seed3"
    cfg = load_config("digits-verdict")
    assert [r["run"] for r in load_results(folder, cfg)] == [r["name"] for r in cfg["runs"]]
    victim = folder / "amata-2-10.json"
    shutil.copy(folder / "pgd-10.json", victim)  # another run under this run's name
    with pytest.raises(ResultError, match="run 'pgd-10', not 'amata-2-10'"):
        load_results(folder, cfg)
    shutil.copy(STORED / "mnist-verdict-10k" / "seed3" / "amata-2-10.json", victim)  # another experiment's
    with pytest.raises(ResultError, match="experiment 'mnist-verdict-10k'"):
        load_results(folder, cfg)
    shutil.copy(results / "digits-verdict" / "seed0" / "amata-2-10.json", victim)  # another seed's
    with pytest.raises(ResultError, match="seed 0, not 3"):
        load_results(folder, cfg)
    shutil.copy(STORED / "digits-verdict" / "seed3" / "amata-2-10.json", victim)
    edit_json(victim, _set(("history", 0, "robust_acc"), 2.0))
    with pytest.raises(ResultError, match=r"amata-2-10.json: history\[0\].robust_acc"):
        load_results(folder, cfg)
    edit_json(victim, _set(("history", 0, "robust_acc"), 0.5))
    edit_json(victim, _set(("config", "data_sha256"), "0" * 64))
    with pytest.raises(ResultError, match="other data"):
        load_results(folder, cfg)


def test_r2_every_stored_result_loads_sane_and_in_its_place():
    from amata_lib.experiments import available, experiment_runs, load_config
    from amata_lib.study.verdict import collect
    paths = sorted(STORED.rglob("*.json"))
    assert len(paths) >= 150
    for path in paths:
        load_run(path)
    folders = sorted({p.parent for p in paths})
    for folder in folders:
        experiment = folder.parent.name.removesuffix("-reduced")
        found = collect(folder, experiment=experiment, seed=int(folder.name.removeprefix("seed")))
        assert len({r["config"].get("data_sha256") for r in found.values()}) == 1, folder
    verdicts = [n for n in available() if "protocol" in load_config(n) and (STORED / n).is_dir()]
    assert {"digits-verdict", "digits-rivals", "mnist-verdict-10k", "mnist-verdict-20k"} <= set(verdicts)
    for name in verdicts:
        assert experiment_runs(name, out_dir=STORED)


# ---------------------------------------------------------------------------- 4. a masked gradient is marked

def test_r2_report_table_marks_a_report_suspect_of_gradient_masking():
    from amata_lib.experiments import report_table

    def run(name, suspect):
        report = {"clean": 0.9, "pgd": 0.5, "cw": 0.4, "autoattack": 0.3}
        if suspect is not None:
            report["gradient_masking_suspect"] = suspect
        return {"run": name, "history": [{"epoch": 1, "time": 1.0, "passes": 10, "robust_acc": 0.5}],
                "report": report}
    lines = report_table({"a": run("a", True), "b": run("b", False), "c": run("c", None)}).splitlines()
    assert "gradient masking suspected" in lines[1]
    assert "masking" not in lines[2] and "masking" not in lines[3]
    assert report_table({"b": run("b", False)}).splitlines()[1] == lines[2]


def test_r2_experiment_logs_a_warning_and_its_table_marks_the_run(mnist_experiment):
    from amata_lib.experiments import load_config, load_results, report_table
    folder, log = mnist_experiment
    assert [line for line in log if "WARNING" in line] == \
        ["[pgd-2] WARNING: gradient masking suspected: a test says so"]
    cfg = load_config(str(folder / "tiny.json"))  # the same config by another name: its name decides
    results = {r["run"]: r for r in load_results(folder / "results" / "tiny-reduced" / "seed0", cfg)}
    assert "gradient masking suspected" in report_table(results).splitlines()[1]


# ---------------------------------------------------------------------------- 5. one line, not a traceback or hang

def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [100_000, 500])
def test_r2_deeply_nested_json_is_one_line_in_every_reader(tmp_path, monkeypatch, capsys, depth):
    monkeypatch.chdir(tmp_path)
    no_training(monkeypatch)
    deep = tmp_path / "deep.json"
    deep.write_text(nested(depth))
    refused_here(capsys, "show", deep, words=["deep.json", "nested"])
    refused_here(capsys, "experiment", deep, words=["deep.json", "nested"])
    refused_here(capsys, "train", *TINY, "--out", deep, words=["deep.json", "nested"])
    refused_here(capsys, "criterion", "--out", deep, "--epochs", "1", "--measure-every", "1", "--seeds", "0",
                 words=["deep.json", "nested"])
    record = json.loads((STORED / "digits-verdict" / "seed0" / "pgd-10.json").read_text())
    text = json.dumps(record).replace('"config": {', '"config": {"deep": ' + nested(depth) + ", ", 1)
    results = stored_copy(tmp_path, "digits-verdict")
    victim = results / "digits-verdict" / "seed0" / "pgd-10.json"
    victim.write_text(text)
    refused_here(capsys, "show", victim, words=["pgd-10.json", "nested"])
    refused_here(capsys, "experiment", "digits-verdict", "--verdict", "--out-dir", results,
                 words=["pgd-10.json", "nested"])


def test_r2_borrow_cycles_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    no_training(monkeypatch)
    protocol = {"seeds": [0], "reference": "pgd-2", "compare": ["pgd-5"],
                "target": {"rule": "fixed", "value": 0.1}}
    tiny_config(tmp_path / "self.json", protocol=protocol, borrow={"experiment": "self.json", "runs": ["pgd-5"]})
    refused_here(capsys, "experiment", "self.json", words=["self.json", "borrows from itself"])
    refused_here(capsys, "experiment", "self.json", "--verdict", words=["self.json", "borrows from itself"])
    tiny_config(tmp_path / "a.json", protocol=protocol, borrow={"experiment": "b.json", "runs": ["pgd-5"]})
    tiny_config(tmp_path / "b.json", name="other", protocol=protocol,
                borrow={"experiment": "a.json", "runs": ["pgd-5"]})
    refused_here(capsys, "experiment", "a.json", words=["a.json", "'b.json' borrows rows itself"])


@pytest.mark.parametrize("where", ["show", "--out", "--checkpoint", "--name", "--data-path", "config",
                                   "--out-dir", "--checkpoint-dir"])
def test_r2_too_long_paths_are_one_line(tmp_path, monkeypatch, capsys, where):
    monkeypatch.chdir(tmp_path)
    no_training(monkeypatch)
    tiny_config(tmp_path / "tiny.json")
    args = {"show": ["show", f"{LONG}.json"],
            "--out": ["train", *TINY, "--out", f"{LONG}.json"],
            "--checkpoint": ["train", *TINY, "--checkpoint", f"{LONG}.pt"],
            "--name": ["train", *TINY, "--name", LONG],
            "--data-path": ["train", *TINY, "--dataset", "mnist", "--data-path", f"{LONG}.npz"],
            "config": ["experiment", f"{LONG}.json"],
            "--out-dir": ["experiment", "tiny.json", "--out-dir", LONG],
            "--checkpoint-dir": ["experiment", "tiny.json", "--checkpoint-dir", LONG]}[where]
    refused_here(capsys, *args, words=["too long"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json"]


@pytest.fixture
def read_only(tmp_path):
    """A read-only file system (a tmpfs mounted ro; needs root), else skip."""
    yield from mounted_tmpfs(tmp_path / "ro", "ro,", "cannot mount a read-only tmpfs here (needs root)")


@pytest.mark.parametrize("option", ["--checkpoint-dir", "--out-dir"])
def test_r2_experiment_refuses_a_read_only_folder_before_training(tmp_path, read_only, monkeypatch, capsys, option):
    monkeypatch.chdir(tmp_path)
    no_training(monkeypatch)
    tiny_config(tmp_path / "tiny.json")
    refused_here(capsys, "experiment", "tiny.json", option, read_only / "sub",
                 words=[option, "cannot be written", "Read-only file system"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro", "tiny.json"]


@pytest.mark.parametrize("option", ["--checkpoint-dir", "--out-dir"])
def test_r2_experiment_refuses_a_file_as_folder_before_training(tmp_path, monkeypatch, capsys, option):
    monkeypatch.chdir(tmp_path)
    no_training(monkeypatch)
    tiny_config(tmp_path / "tiny.json")
    (tmp_path / "a-file").write_text("a file, not a folder")
    before = files(tmp_path)
    refused_here(capsys, "experiment", "tiny.json", option, "a-file", words=[option, "a-file", "cannot be written"])
    assert files(tmp_path) == before


def test_r2_the_train_lock_in_a_read_only_folder_is_a_user_error(read_only):
    from amata_lib import Constant, DigitsCNN, load, train
    from amata_lib.infra.errors import WriteError
    with pytest.raises(WriteError, match="Read-only file system"):
        train(DigitsCNN(), *load("digits"), schedule=Constant(1, 0.1, 1), eps=0.2,
              checkpoint=read_only / "sub" / "run.pt")


def test_r2_experiment_seed_is_below_two_to_the_32(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    no_training(monkeypatch)
    tiny_config(tmp_path / "tiny.json")
    refused_here(capsys, "experiment", "tiny.json", "--seed", str(2 ** 32), words=["--seed", "<= 4294967295"])
    from amata_lib.experiments import load_config, with_overrides
    from amata_lib.infra.errors import UserError
    with pytest.raises(UserError, match="seed"):
        with_overrides(load_config("tiny.json"), seed=2 ** 40)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json"]


@pytest.mark.parametrize("command", ["train", "experiment"])
def test_r2_the_meta_device_is_refused(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    tiny_config(tmp_path / "tiny.json")
    args = ["train", *TINY] if command == "train" else ["experiment", "tiny.json"]
    refused_here(capsys, *args, "--device", "meta", words=["device 'meta'"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json"]


def test_r2_a_test_set_of_other_images_is_refused_before_training(tmp_path, monkeypatch, capsys):
    from amata_lib import Constant, DigitsCNN, load, train
    from amata_lib.infra.errors import UserError
    monkeypatch.chdir(tmp_path)
    npz(tmp_path / "small-test.npz", x_test=np.zeros((32, 14, 14), np.uint8))
    refused_here(capsys, "train", *TINY, "--dataset", "mnist", "--data-path", "small-test.npz",
                 words=["x_test", "(1, 14, 14)", "(1, 28, 28)"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small-test.npz"]
    train_set, test_set = load("digits")
    other = torch.utils.data.TensorDataset(test_set.tensors[0].double(), test_set.tensors[1])
    seen = []
    with pytest.raises(UserError, match="test_set.*float64.*float32"):
        train(DigitsCNN(), train_set, other, schedule=Constant(1, 0.1, 1), eps=0.2,
              callback=lambda record, model: seen.append(record))
    assert not seen  # refused before the first epoch


def test_r2_show_refuses_what_is_no_regular_json_file(tmp_path, capsys):
    refused_here(capsys, "show", "/dev/zero", words=["/dev/zero", "not a regular file"])
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:  # sparse: no disk used
        f.truncate(2 ** 30)
    refused_here(capsys, "show", huge, words=["huge.json", "too large"])


@pytest.mark.slow
def test_r2_a_closed_pipe_ends_the_output_quietly(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "amata_lib", "schedule", "--method", "amata", "--epochs",
                             "100000"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"Amata(")
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert err == "" and proc.returncode == 141  # as a program stopped by SIGPIPE, without a word


STEP_AND_EPOCH_FLAGS = {"train": ["--epochs", "--k", "--k-min", "--k-max", "--warmup", "--eval-steps", "--cw-steps",
                                  "--early-stop-steps"],
                        "schedule": ["--epochs", "--k", "--k-min", "--k-max"],
                        "experiment": ["--epochs"]}


@pytest.mark.parametrize("command", list(STEP_AND_EPOCH_FLAGS))
def test_r2_the_bounds_are_stated_in_help(monkeypatch, capsys, command):
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        main([command, "--help"])
    entries, lines = {}, capsys.readouterr().out.split("options:", 1)[1].splitlines()
    for line in lines:  # one entry per option: its line and the help lines under it
        if line.strip().startswith("-"):
            flag = line.split()[0].rstrip(",")
            entries[flag] = line
        elif line.startswith("    ") and entries:
            entries[flag] += line
    for flag in STEP_AND_EPOCH_FLAGS[command]:
        text = " ".join(entries[flag].split())
        assert "at most 100,000" in text or "at most 10,000" in text, (flag, text)


@pytest.mark.parametrize("args, words", [
    (["train", "--epochs", "1e30"], ["--epochs", "invalid int"]),
    (["train", "--epochs", "100001"], ["--epochs", "<= 100000"]),
    (["train", "--method", "adaptive", "--k-max", "100000000"], ["--k-max", "<= 10000"]),
    (["schedule", "--method", "amata", "--k-max", "100000000"], ["--k-max", "<= 10000"]),
    (["experiment", "tiny.json", "--epochs", "100001"], ["--epochs", "<= 100000"]),
    (["experiment", "tiny.json", "--epochs", "1000000000000"], ["--epochs", "<= 100000"]),
    (["experiment", "epochs.json"], ["epochs.json", "epochs", "100000"]),
    (["experiment", "kmax.json"], ["kmax.json", "runs[0].k_max", "10000"]),
])
def test_r2_epoch_and_step_bounds_are_enforced(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    no_training(monkeypatch)
    tiny_config(tmp_path / "tiny.json")
    tiny_config(tmp_path / "epochs.json", epochs=10 ** 9)
    tiny_config(tmp_path / "kmax.json", runs=[{"name": "a", "method": "amata", "k_min": 2, "k_max": 10 ** 8,
                                               "tau": 0.5, "maximizer": "pgd"}])
    before = files(tmp_path)
    refused_here(capsys, *args, words=words)
    assert files(tmp_path) == before


# ---------------------------------------------------------------------------- 6. smaller

def test_r2_the_same_run_with_flags_reordered_is_done_already(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "train", *TINY, "--name", "r", "--lr", "0.05")[0] == 0
    before = files(tmp_path)
    reordered = ["--no-progress", "--lr", "0.05", "--eval-subset", "20", "--epochs", "1", "--k", "2",
                 "--train-subset", "64", "--name", "r", "--method", "pgd"]
    code, out, _ = run_cli(capsys, "train", *reordered)
    assert code == 0 and "done already" in out
    assert files(tmp_path) == before


def test_r2_show_escapes_control_characters(tmp_path, capsys):
    path = tmp_path / "run.json"
    shutil.copy(STORED / "digits-verdict" / "seed0" / "pgd-10.json", path)
    edit_json(path, _set(("provenance", "command"), "python -m amata_lib \x1b[2J\x1b]0;pwned\x07 train"))
    edit_json(path, _set(("provenance", "device"), "cpu\rfake"))
    code, out, _ = run_cli(capsys, "show", path)
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "\\x1b[2J" in out and "cpu\\x0dfake" in out


def test_r2_an_error_line_escapes_control_characters(tmp_path, capsys):
    refused_here(capsys, "show", tmp_path / "two\nlines\x1b[31m.json", words=["two\\x0alines\\x1b[31m.json"])


def test_r2_a_truncated_checkpoint_is_called_damaged_not_malicious(tmp_path, monkeypatch, capsys):
    from amata_lib.infra.checkpoints import load_checkpoint, save_checkpoint
    from amata_lib.infra.errors import CheckpointError
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {"w": torch.zeros(8)}, "history": [{"epoch": 1, "time": 1.0}]}, {"k": 1})
    with zipfile.ZipFile(good) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    pickle_name = next(n for n in entries if n.endswith("data.pkl"))
    seen = set()
    for cut in range(1, len(entries[pickle_name])):  # the pickle inside cut short: every way it can fail
        bad = tmp_path / "bad.pt"
        with zipfile.ZipFile(bad, "w") as z:
            for name, data in entries.items():
                z.writestr(name, data[:cut] if name == pickle_name else data)
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(bad, {"k": 1})
        assert "damaged" in str(caught.value) and "execute" not in str(caught.value), (cut, str(caught.value))
        seen.add(str(caught.value))
    data = good.read_bytes()
    for cut in range(1, len(data), 97):  # the file cut short
        (tmp_path / "short.pt").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="damaged"):
            load_checkpoint(tmp_path / "short.pt", {"k": 1})
    evil_checkpoint(tmp_path / "evil.pt")  # a complete file that would run code keeps its reason
    with pytest.raises(CheckpointError, match="would execute"):
        load_checkpoint(tmp_path / "evil.pt", {"k": 1})
    monkeypatch.chdir(tmp_path)
    refused_here(capsys, "train", *TINY, "--checkpoint", "bad.pt", words=["bad.pt", "damaged"])


def test_r2_amp_without_bf16_is_one_warning_line(tmp_path, monkeypatch, capsys):
    import amata_lib.core.training as training
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    code, _, err = run_cli(capsys, "train", *TINY, "--amp", "--device", "cpu", "--name", "amp")
    assert code == 0
    assert len(err.strip().splitlines()) == 1 and err.startswith("amata_lib: warning: amp on this CPU"), err


def test_r2_amp_with_bf16_is_silent(tmp_path, monkeypatch, capsys):
    import amata_lib.core.training as training
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)
    # refused after the device check (digits images do not fit LeNet), so no training is needed to see it
    refused_here(capsys, "train", *TINY, "--amp", "--device", "cpu", "--model", "lenet", words=["LeNet"])
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    code, _, err = run_cli(capsys, "train", *TINY, "--amp", "--device", "cpu", "--model", "lenet")
    assert code == 2 and err.startswith("amata_lib: warning: amp on this CPU") and len(err.splitlines()) == 2


# ---------------------------------------------------------------------------- 7. baselines in the docstrings

def test_r2_the_baseline_notes_are_in_the_method_tables():
    from amata_lib.methods.atta import ATTAMaximizer
    from amata_lib.methods.yopo import YOPOMaximizer
    yopo = " ".join(YOPOMaximizer.__doc__.split())
    assert "Adam" in yopo and "1e-3" in yopo and "batch 64" in yopo and "10 epochs" in yopo
    assert "batch 256" in yopo and "41 epochs" in yopo
    atta = " ".join(ATTAMaximizer.__doc__.split())
    assert "(1.0 / batch_size)" in atta and "64 x weaker" in atta and "weight decay 2e-4" in atta


def test_two_ranks_checking_one_folder_never_take_it_from_each_other(tmp_path, monkeypatch):
    """torchrun's ranks all run check_writable, then rank 0 takes the checkpoint lock. CI once saw rank 0 fail with
    "cannot create the lock file …: No such file or directory": rank 1's probe removed the folder it had found
    missing, between rank 0's mkdir and open. check_writable now removes only folders its own mkdir made, and
    RunLock makes a vanished folder again."""
    from pathlib import Path

    from amata_lib.infra.checkpoints import RunLock
    from amata_lib.infra.io import check_writable
    folder = tmp_path / "data" / "checkpoints"
    real_mkdir = Path.mkdir

    def other_rank_first(self, *args, **kwargs):  # another process makes the folder just before this call does
        if self == folder and not folder.exists():
            os.mkdir(folder)
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", other_rank_first)
    check_writable(folder / "run.pt", "--checkpoint")
    assert folder.is_dir()  # the other rank's folder is left in place
    assert sorted(p.name for p in folder.iterdir()) == []  # the probe is gone
    monkeypatch.setattr(Path, "mkdir", real_mkdir)
    check_writable(tmp_path / "new" / "deep" / "run.pt", "--checkpoint")
    assert not (tmp_path / "new").exists()  # what this call made, it removes

    real_open, calls = os.open, []

    def vanished_once(path, *args):  # the folder is removed between RunLock's mkdir and its open
        calls.append(path)
        if len(calls) == 1:
            os.rmdir(folder)
        return real_open(path, *args)

    monkeypatch.setattr(os, "open", vanished_once)
    with RunLock(folder / "run.pt"):
        assert (folder / "run.pt.lock").exists()
    assert len(calls) == 2
