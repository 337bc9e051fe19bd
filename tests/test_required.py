"""The suite's own promises: under CI=true a test that would skip fails with its reason, and every
run ends with the list of what it skipped and why."""
import subprocess
import sys

from conftest import ROOT, run_env

SKIPPING = '''
import pytest

def test_needs_a_browser():
    pytest.skip("no chromium here")

@pytest.fixture
def database():
    pytest.skip("PostgreSQL is not installed")

def test_needs_a_database(database):
    pass

def test_plain():
    pass
'''


def _pytest(tmp_path, ci: str):
    (tmp_path / "test_sample.py").write_text(SKIPPING)
    env = run_env(CI=ci, PYTHONPATH=str(ROOT / "tests"))
    return subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir",
                           str(tmp_path), "-p", "required", "-p", "no:cacheprovider", "-p", "no:xdist",
                           str(tmp_path / "test_sample.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_under_ci_a_skip_fails_with_its_reason(tmp_path):
    result = _pytest(tmp_path, "true")
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 failed, 1 passed, 1 error" in result.stdout.splitlines()[-1]  # the fixture's skip fails its setup
    assert "a required test would skip under CI=true: no chromium here" in result.stdout
    assert "a required test would skip under CI=true: PostgreSQL is not installed" in result.stdout


def test_outside_ci_skips_are_listed_with_their_reasons_at_the_end(tmp_path):
    result = _pytest(tmp_path, "")
    assert result.returncode == 0, result.stdout[-2000:]
    summary = result.stdout[result.stdout.index("short test summary info"):]
    assert "SKIPPED" in summary and "no chromium here" in summary and "PostgreSQL is not installed" in summary
    assert "1 passed, 2 skipped" in summary
