"""The suite's own promises: under CI=true a test that would skip fails with its reason, every run
ends with the list of what it skipped and why, and a run that leaves a process behind fails."""
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


LEAVING = '''
import subprocess

def test_starts_a_server_and_forgets_it():
    with open("forgotten.pid", "w") as f:
        f.write(str(subprocess.Popen(["sleep", "300"]).pid))
'''


def _pytest(tmp_path, ci: str, sample: str = SKIPPING):
    (tmp_path / "test_sample.py").write_text(sample)
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


def test_a_run_that_leaves_a_process_behind_fails_and_ends_it(tmp_path):
    import psutil

    result = _pytest(tmp_path, "", LEAVING)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 passed, 1 error" in result.stdout.splitlines()[-1]
    assert "the tests left 1 processes running: ['sleep 300']" in result.stdout
    pid = int((tmp_path / "forgotten.pid").read_text())  # that very process, not any `sleep 300` on the machine
    try:
        forgotten = psutil.Process(pid)
        forgotten.wait(10)  # SIGKILL sent as the session ended: give it time to land
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        pass
    assert not forgotten.is_running() or forgotten.status() == psutil.STATUS_ZOMBIE
