"""`pytest --nbval` typed at the repository root tests the chapters as `make test` does (conftest.py)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test starts a pytest process (the plain one imports torch and every test)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "book").glob("*.ipynb"))
PROBE = '''
def pytest_collection_finish(session):
    o = session.config.option
    print(f"PROBE current_env={o.nbval_current_env} sanitize={o.nbval_sanitize_with}")
'''


def collect(tmp_path, *args):
    (tmp_path / "nbval_probe.py").write_text(PROBE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "nbval_probe",
                           "-p", "no:cacheprovider", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    probe = next(line for line in proc.stdout.splitlines() if line.startswith("PROBE"))
    return ids, probe


def test_pytest_nbval_collects_every_chapter_with_the_books_options(tmp_path):
    ids, probe = collect(tmp_path, "--nbval")
    assert CHAPTERS and sorted({i.split("::")[0] for i in ids}) == CHAPTERS
    assert probe == f"PROBE current_env=True sanitize={ROOT / 'book' / 'nbval_sanitize.cfg'}"


def test_pytest_nbval_on_one_chapter_collects_only_it(tmp_path):
    ids, probe = collect(tmp_path, "--nbval", "book/02_amata.ipynb")
    assert ids and {i.split("::")[0] for i in ids} == {"book/02_amata.ipynb"}
    assert "current_env=True" in probe and "nbval_sanitize.cfg" in probe


def test_explicit_sanitizer_wins(tmp_path):
    other = tmp_path / "other.cfg"
    other.write_text("")
    _, probe = collect(tmp_path, "--nbval", "--nbval-sanitize-with", str(other), "book/02_amata.ipynb")
    assert probe.endswith(f"sanitize={other}")


def test_plain_pytest_collects_only_the_unit_tests(tmp_path):
    ids, probe = collect(tmp_path)
    assert ids and all(i.startswith("tests/") for i in ids)
    assert "current_env=False" in probe and "sanitize=None" in probe
