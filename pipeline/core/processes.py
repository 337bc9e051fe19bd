"""A server run in a process group of its own, ended with everything it started.

`mlflow ui` runs uvicorn and a job runner with seven huey consumers (15 processes, about 3.4 GiB),
which all outlive a plain terminate of its first process. Its own group lets one signal reach them
all, and lets us wait until every one is gone.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

from pipeline.core.interrupts import interrupts_deferred


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies, dead but not yet reaped, do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs (macOS): a signal 0 tells, zombies included
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue  # it ended while we read
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def end_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the whole group, then SIGKILL to whatever is left after the grace; returns once none
    of it runs. Signals are held meanwhile, so a second Ctrl-C cannot cut the clean-up short."""
    with interrupts_deferred():
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                break  # the group is gone
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and (proc.poll() is None or group_alive(proc.pid)):
                time.sleep(0.1)
            if proc.poll() is not None and not group_alive(proc.pid):
                break
        proc.poll()


def serve_until_stopped(cmd: list, env: dict, grace_s: float = 10.0) -> int:
    """Run `cmd` in a group of its own until it exits or this process is stopped (SIGTERM and Ctrl-C
    arrive as KeyboardInterrupt, see cli); either way the whole group ends with it."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait()
    finally:
        end_group(proc, grace_s)
