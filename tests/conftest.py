"""Shared fixtures: the bundled digits data, small models trained once per session, and the CLI in-process."""
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import amata_lib
from amata_lib import Constant, DigitsCNN, TrainOptions, load, train
from amata_lib.cli import main

ROOT = Path(__file__).resolve().parents[1]

# One torch thread in each test process (each pytest-xdist worker), unless OMP_NUM_THREADS says otherwise: the
# models here are tiny, so a second thread buys little, and on the shared 2-core machine two threads per
# process made a training test up to 14x slower (threads waiting for each other while descheduled). Processes
# that tests start keep their own settings (the environment is not changed); `pytest --nbval` does not load
# this file.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
# sys.argv[0] of `python -m amata_lib`: the module's file (the train command records sys.argv[1:])
MAIN_FILE = str(Path(amata_lib.__file__).parent / "__main__.py")


@pytest.fixture(scope="session")
def digits():
    return load("digits")


def _trained_once(name, tmp_path_factory, make):
    """``make()`` -> (model, history), once per test session, also under pytest-xdist: there the first worker
    trains and stores the weights, the history, the model's mode and torch's RNG state after training in the
    session's shared temporary folder, and the other workers load them, so that every worker sees the same
    model and the same RNG state as if it had trained itself."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return make()
    from filelock import FileLock  # a dependency of torch

    path = tmp_path_factory.getbasetemp().parent / f"{name}.pt"
    with FileLock(f"{path}.lock"):
        if not path.exists():
            model, history = make()
            torch.save({"state": model.state_dict(), "history": history, "training": model.training,
                        "rng": torch.get_rng_state()}, path)
            return model, history
    stored = torch.load(path, weights_only=True)
    model = DigitsCNN()
    model.load_state_dict(stored["state"])
    model.train(stored["training"])
    torch.set_rng_state(stored["rng"])
    return model, stored["history"]


@pytest.fixture(scope="session")
def erm_model(digits, tmp_path_factory):
    """DigitsCNN trained 10 epochs on clean digits (about 1 s on 2 cores)."""
    def make():
        torch.manual_seed(0)
        model = DigitsCNN()
        history = train(model, *digits, epochs=10, eps=0.2, options=TrainOptions(eval_every=10))
        return model, history
    return _trained_once("erm_model", tmp_path_factory, make)


@pytest.fixture(scope="session")
def pgd_model(digits, tmp_path_factory):
    """DigitsCNN adversarially trained 10 epochs with PGD-5 at eps 0.2."""
    def make():
        torch.manual_seed(0)
        model = DigitsCNN()
        history = train(model, *digits, epochs=10, eps=0.2, schedule=Constant(5, 0.1, 10),
                        options=TrainOptions(eval_every=10))
        return model, history
    return _trained_once("pgd_model", tmp_path_factory, make)


@dataclass
class Ran:
    """What a run of the command line left: as ``subprocess.run(..., capture_output=True, text=True)``."""
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli_main(capsys, monkeypatch):
    """``cli_main(*args, cwd=folder)`` runs ``python -m amata_lib *args`` in this process (no new Python, no
    torch import): ``amata_lib.cli.main(args)`` in ``cwd`` with the ``sys.argv`` that ``python -m`` gives,
    its exit code (argparse's ``SystemExit`` for ``--help`` included) and what it printed on stdout and
    stderr. Warnings are written to stderr under Python's default filters, as a new process would print
    them, so a check of "one line on stderr" still sees them (the library's DeprecationWarnings stay errors,
    as pyproject's filterwarnings makes them in every test). Anything else raised (a bug) propagates."""
    def run(*args, cwd=None):
        args = [str(a) for a in args]
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", [MAIN_FILE, *args])
        capsys.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()
            warnings.simplefilter("default")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=category)
            warnings.filterwarnings("error", category=DeprecationWarning, module="amata_lib.*")  # as pyproject's
            try:
                code = main(args)
            except SystemExit as exc:  # argparse's --help
                code = 0 if exc.code is None else exc.code
        out, err = capsys.readouterr()
        err += "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
        return Ran(code, out, err)
    return run


@pytest.fixture
def one_thread():
    """One torch thread in this process, and the environment for a child ``python -m amata_lib`` with one thread
    (OMP_NUM_THREADS=1, this checkout on PYTHONPATH): a run here and one in a child are then the same
    computation, bit for bit (a reference run in-process, the one killed with SIGKILL a real process)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    torch.set_num_threads(threads)
