"""Helper processes for `python -m pipeline study <optimizer> --workers N`.

Helpers are plain study workers (`study <optimizer> --worker`) on the same storage and tracking
server; Optuna hands each its own trials. They are started as soon as the storage and tracking
checks pass, so their start-up (TensorFlow's import) overlaps ours, and they get our Ctrl-C.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def spawn(optimizer: str, problem: str, n: int, storage_url: str, params_file: Path) -> list:
    """n helper workers. The storage URL travels in the environment, so a password in it never
    shows in the process list."""
    env = {**os.environ, "OPTUNA_STORAGE": storage_url}
    cmd = [sys.executable, "-m", "pipeline", "--params", str(params_file), "study", optimizer, "--problem", problem, "--worker"]
    return [subprocess.Popen(cmd, env=env) for _ in range(n)]


def stop(helpers: list, timeout: float = 30.0) -> None:
    """Pass an interrupt on to the helpers and wait for them to record their trials."""
    for h in helpers:
        if h.poll() is None:
            h.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    for h in helpers:
        try:
            h.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            h.kill()
            h.wait()
