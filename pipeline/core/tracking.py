"""MLflow logging in a process of its own: one parent run per study, one child run per trial.

The stages never import MLflow. A Tracker starts `python -m pipeline.core.tracking_process`,
which owns the MlflowClient, and talks to it through a pipe, one JSON request per line. Why not
MLflow's client in the stage's own process: measured on the 2-core machine, a trial's run costs
11.2 ms there (median; create_run, log_batch, set_terminated on SQLite in WAL mode) and 12.8 ms
with MLflow's asynchronous logging (`log_batch(synchronous=False)`: run creation and termination
stay synchronous), against 15 ms for the whole rest of a trial; and importing MLflow takes 1.3 s
that here overlaps TensorFlow's import. In the process, that work runs on the second core.
Requests are served in order: a trial's run is sent without waiting, and any later request
returns only once the runs before it are written.

Runs are linked through the `mlflow.parentRunId` tag explicitly, never through MLflow's
thread-local active run. The Optuna storage stays the source of truth: a run lost with a killed
worker is written again from it (see stages/study/mirror.py).
"""
import json
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from pipeline.core.config import mask_url
from pipeline.core.errors import PipelineError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}  # the user's own settings win
PARENT = "mlflow.parentRunId"


def local_store(uri: str):
    """The file of a SQLite tracking store (None for any other kind)."""
    from pathlib import Path

    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def now_ms() -> int:
    return int(time.time() * 1000)


def _check_server(uri: str, timeout: float = 10.0) -> None:
    """An HTTP tracking server answers /health, or we stop before any work: MLflow's own client
    would retry for minutes first."""
    parts = urlparse(uri)
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    health = parts._replace(netloc=netloc, path=parts.path.rstrip("/") + "/health").geturl()
    try:
        with urllib.request.urlopen(health, timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise PipelineError(f"MLflow tracking server {mask_url(uri)} is unreachable ({reason}): "
                            f"start it or fix MLFLOW_TRACKING_URI") from None


class Tracker:
    """The stages' handle on the MLflow process. Creating one starts the process; `ready()`
    waits until it has the experiment (and raises if the tracking store is not usable)."""

    def __init__(self, tracking_uri: str, experiment: str):
        if urlparse(tracking_uri).scheme in ("http", "https"):
            _check_server(tracking_uri)
        self.uri = tracking_uri
        # The URI goes through the environment: a password in it stays out of the process list.
        # A lost tracking server fails a run within seconds, not after MLflow's minutes of
        # retries: the study goes on without it, and the next run logs what is missing.
        env = {**FAIL_FAST, **os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.core.tracking_process", experiment], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env)
        self._requests = 0
        self._ready = False
        self.seconds = {}  # trial number -> seconds MLflow took to log it

    def _failure(self, what: str) -> PipelineError:
        return PipelineError(f"MLflow tracking at {mask_url(self.uri)} {what}: rerun the study (its finished "
                             f"trials are kept in Optuna and logged then), or check MLFLOW_TRACKING_URI")

    def _send(self, message: dict) -> None:
        try:
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self._failure(f"stopped (its process exited with {self._process.poll()})") from None

    def _reply(self, request_id: int):
        """Read replies until the one for request_id; an error in an earlier trial run raises."""
        while True:
            line = self._process.stdout.readline()
            if not line:
                raise self._failure(f"stopped (its process exited with {self._process.wait()})")
            reply = json.loads(line)
            self.seconds.update({int(k): v for k, v in reply.get("seconds", {}).items()})
            if "error" in reply:
                raise self._failure(f"failed ({reply['error']})")
            if reply.get("id") == request_id:
                return reply.get("result")

    def _call(self, op: str, **args):
        self.ready()
        self._requests += 1
        self._send({"id": self._requests, "op": op, "args": args})
        return self._reply(self._requests)

    def ready(self) -> None:
        if not self._ready:
            self._reply(0)  # the process says hello once it holds the experiment
            self._ready = True

    # --- the study's parent run -------------------------------------------------------------

    def run_exists(self, run_id: str) -> bool:
        return self._call("run_exists", run_id=run_id)

    def find_study_run(self, study_name: str):
        return self._call("find_study_run", study_name=study_name)

    def create_study_run(self, study_name: str, run_name: str, tags: dict) -> str:
        return self._call("create_run", name=run_name, tags={**tags, "study_name": study_name, "run_type": "study"})

    def experiment_ids(self, group: str) -> tuple:
        """(the summary experiment, a study's trials experiment; group "<problem> · <optimizer>"), for links."""
        return self._call("summary_experiment_id"), self._call("trials_experiment_id", group=group)

    def reopen(self, run_id: str) -> None:
        self._call("set_status", run_id=run_id, status="RUNNING")

    def end(self, run_id: str, status: str) -> None:
        self._call("set_status", run_id=run_id, status=status)

    def finish_study(self, run_id: str, metrics: dict, tags: dict, artifact_dir=None, name=None) -> None:
        """Best values as metrics and tags, not params: a study extended with more trials may
        find a new best, and MLflow params cannot change once logged."""
        self._call("finish", run_id=run_id, metrics=metrics, params={}, tags={k: str(v) for k, v in tags.items()},
                   name=name,
                   artifacts=[[str(artifact_dir), None]] if artifact_dir else [], directory=True)

    # --- trial runs -------------------------------------------------------------------------

    def log_trial(self, parent_id: str, number: int, params: dict, metrics: dict, curves: dict, tags: dict,
                  status: str, start_ms: int, end_ms: int) -> None:
        """Send one trial's run without waiting: params, scalar metrics, curves as {name: (steps,
        values)}. Blocks only while the pipe is full (about 20 trials); raises if an earlier run
        could not be written."""
        self.ready()
        if select.select([self._process.stdout], [], [], 0)[0]:  # only an error is ever unasked for
            self._reply(None)
        points = [[k, float(v), end_ms, 0] for k, v in metrics.items()]
        for name, (steps, values) in curves.items():
            points += [[name, float(v), end_ms, int(s)] for s, v in zip(steps, values)]
        self._send({"op": "trial", "args": {
            "number": number, "tags": {**tags, PARENT: parent_id, "run_type": "trial", "trial_number": str(number)},
            "metrics": points, "params": {k: str(v) for k, v in params.items()}, "status": status,
            "start_ms": start_ms, "end_ms": end_ms}})

    def claim(self, parent_id: str, key: str, worker: str) -> str:
        """Write-once param `key` = worker on the study's run; returns who holds it (MLflow refuses
        to change a logged param, atomically, so exactly one worker gets its own name back)."""
        return self._call("claim", run_id=parent_id, key=key, worker=worker)

    def flush(self) -> None:
        """Wait until every trial sent so far is in MLflow."""
        self._call("ping")

    def delete_unfinished_trial_runs(self, parent_id: str, group: str, number: int) -> None:
        self._call("delete_unfinished_trial_runs", parent_id=parent_id, group=group, number=number)

    def logged_trials(self, parent_id: str, group: str) -> dict:
        """trial number -> its child runs' statuses."""
        return {int(k): v for k, v in self._call("logged_trials", parent_id=parent_id, group=group).items()}

    def log_run(self, group: str, name: str, tags: dict, params: dict, metrics: dict, curves: dict) -> None:
        """A run in the experiment `<experiment> · <group>`: scalar metrics, and curves as
        {name: (steps, values)}."""
        points = [[k, float(v), now_ms(), 0] for k, v in metrics.items()]
        points += [[k, float(v), now_ms(), int(s)] for k, (steps, values) in curves.items() for s, v in zip(steps, values)]
        self._call("run", name=name, tags={k: str(v) for k, v in tags.items()},
                   params={k: str(v) for k, v in params.items()}, metrics=points, group=group)

    # --- the report -------------------------------------------------------------------------

    def log_report(self, name: str, params: dict, metrics: dict, tags: dict, artifacts: list) -> str:
        """The evaluation and report as one run; artifacts are (file, folder or None) pairs."""
        run_id = self._call("create_run", name=name, tags={**tags, "run_type": "report"})
        self._call("finish", run_id=run_id, metrics=metrics, params={k: str(v) for k, v in params.items()}, tags={},
                   artifacts=[[str(path), folder] for path, folder in artifacts], directory=False)
        return run_id

    def close(self) -> None:
        """Let the MLflow process finish what it was sent, and exit."""
        if not self._process.stdin.closed:
            self._process.stdin.close()
        self._process.wait()
        self._process.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
