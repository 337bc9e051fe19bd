"""What the suite promises of itself.

Under CI=true every test is required: a skip (no Chromium, no PostgreSQL, no tmpfs mount) fails
with its reason, since .ci/run installs all of them and a green run must have tested them. Outside
CI a skip stays a skip, and pytest's `-ra` (pyproject.toml) lists each with its reason at the end.

And the suite leaves no process behind: every process a test session starts carries its pid in
OWNER_ENV (children inherit the environment), and at the session's end any that still runs fails it.
"""
import os
import time
from pathlib import Path

import pytest

OWNER_ENV = "PIPELINE_TEST_SESSION"


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and under_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"a required test would skip under CI=true: {reason}"


def owned_processes(owner: str) -> list:
    """Pids of running processes (zombies aside) this session started: its descendants, and any whose
    environment names it (a server that left its parent's tree, a daemon, an orphan)."""
    import psutil

    marker, found = f"{OWNER_ENV}={owner}".encode(), []
    for child in psutil.Process(int(owner)).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "from multiprocessing." not in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    for entry in Path("/proc").glob("[0-9]*"):
        if int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0") and \
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X") and \
                    b"from multiprocessing." not in (entry / "cmdline").read_bytes():  # ends with this interpreter
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue  # ended while we looked, or not ours to read
    return sorted(set(found))


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()[:120]
    except OSError:
        return f"pid {pid}"


@pytest.fixture(scope="session", autouse=True)
def leaves_no_process_behind():
    """Set up first, so torn down last: after every other fixture has stopped its servers."""
    owner = str(os.getpid())
    os.environ[OWNER_ENV] = owner
    yield
    deadline, left = time.monotonic() + 15, owned_processes(owner)
    while left and time.monotonic() < deadline:  # a server's last process may still be on its way out
        time.sleep(0.5)
        left = owned_processes(owner)
    if left:
        described = [_command_line(pid) for pid in left]
        for pid in left:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        pytest.fail(f"the tests left {len(left)} processes running: {described}")
