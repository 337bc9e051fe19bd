"""Real servers for the scale-out tests: PostgreSQL (from Debian's packages, which .ci/run installs)
and `mlflow server`, both bound to 127.0.0.1 on free ports, started here and torn down after."""
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.core import processes

# The superuser's password: the tests check it never leaks into logs, MLflow or outputs.
PASSWORD = "pw-" + secrets.token_hex(8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """A throwaway cluster: initdb into a temporary folder, run as the postgres user if we are root
    (PostgreSQL refuses to run as root), password authentication over TCP on 127.0.0.1 only."""

    def __init__(self):
        bindir = _postgres_bin()
        if bindir is None:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql); under CI=true this fails")
        self.bindir, self.port = bindir, free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pg-"))
        self.as_user = {}  # subprocess's own switch of user: no runuser/su, which may not be on PATH
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [],
                            "env": {**os.environ, "HOME": user.pw_dir, "USER": "postgres", "LOGNAME": "postgres"}}
        (self.root / "pw").write_text(PASSWORD)
        if self.as_user:
            os.chown(self.root / "pw", self.as_user["user"], -1)
        self._run("initdb", "-D", str(self.root / "data"), "-U", "postgres", "-A", "scram-sha-256",
                  f"--pwfile={self.root / 'pw'}", "--no-sync")
        # fsync off: a test cluster needs no durability, and it spares the shared disk.
        self.start()

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.root / "data"), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def halt(self) -> None:
        """Stop the server as a crash or a restart would (-m fast: every connection is cut), keeping its data."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def _run(self, tool: str, *args: str) -> None:
        out = subprocess.run([str(self.bindir / tool), *args], capture_output=True, text=True, timeout=120,
                             **self.as_user)
        if out.returncode != 0:
            raise RuntimeError(f"{tool} failed: {out.stderr or out.stdout}")

    def url(self, database: str) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")
        except RuntimeError:
            pass  # already stopped (a test that halted it and failed before starting it again)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with its runs in PostgreSQL and artifacts in a folder. The
    backend URI, password and all, goes through the environment, not the command line."""

    def __init__(self, backend_uri: str, artifacts: Path, port: int = 0):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": backend_uri}
        self.log = open(artifacts.parent / "mlflow-server.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--artifacts-destination", str(artifacts), "--workers", "1"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("mlflow server did not answer /health within 120 s")

    def stop(self) -> None:
        """The server with every process it started (its job runner and consumers)."""
        processes.end_group(self.proc, grace_s=30)
        self.log.close()
