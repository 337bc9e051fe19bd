"""MLflow logging in a process of its own: one parent run per study, one child run per trial.

The stages never import MLflow. A Tracker starts `python -m pipeline.tracking`, which owns the
MlflowClient, and talks to it through a pipe, one JSON request per line. So MLflow's start-up
(seconds) overlaps TensorFlow's, and its ~20-30 ms of Python per trial run on the second core
beside the next trials instead of adding to them. Requests are served in order: a trial's run is
sent without waiting, and any later request returns only once the runs before it are written.

Runs are linked through the `mlflow.parentRunId` tag explicitly, never through MLflow's
thread-local active run. The Optuna storage stays the source of truth: a run lost with a killed
worker is written again from it (see study.sync_mlflow).
"""
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from pipeline.config import mask_url
from pipeline.errors import PipelineError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PARENT = "mlflow.parentRunId"


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
        self._process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.tracking", experiment], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri})
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

    def create_study_run(self, study_name: str, tags: dict) -> str:
        return self._call("create_run", name=study_name, tags={**tags, "study_name": study_name, "run_type": "study"})

    def reopen(self, run_id: str) -> None:
        self._call("set_status", run_id=run_id, status="RUNNING")

    def end(self, run_id: str, status: str) -> None:
        self._call("set_status", run_id=run_id, status=status)

    def finish_study(self, run_id: str, metrics: dict, tags: dict, artifact_dir=None) -> None:
        """Best values as metrics and tags, not params: a study extended with more trials may
        find a new best, and MLflow params cannot change once logged."""
        self._call("finish", run_id=run_id, metrics=metrics, params={}, tags={k: str(v) for k, v in tags.items()},
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

    def logged_trials(self, parent_id: str) -> dict:
        """trial number -> its child runs' statuses."""
        return {int(k): v for k, v in self._call("logged_trials", parent_id=parent_id).items()}

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


# --- the MLflow process ---------------------------------------------------------------------

def _sqlite_without_fsync_per_commit() -> None:
    """WAL and synchronous=NORMAL for SQLite stores opened by this process: a commit no longer
    waits for the disk (half of a run's cost on the development machine). SQLite's guarantee is
    that a power loss may drop the last commits but never corrupts the file, and dropped trial
    runs are logged again from the Optuna storage, which keeps fsyncing. Not for network file
    systems, where SQLite's WAL does not work: use a tracking server there."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(connection, _record):
        if isinstance(connection, sqlite3.Connection):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()


class _Mlflow:
    """What the stages ask of MLflow, on one MlflowClient (in the MLflow process only)."""

    def __init__(self, uri: str, experiment: str):
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param, RunTag

        self.Metric, self.Param, self.RunTag = Metric, Param, RunTag
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                self.experiment_id = self.client.create_experiment(experiment)
            except Exception:  # another worker created it just now
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    raise
        if found is not None:
            self.experiment_id = found.experiment_id

    def trial(self, number, tags, metrics, params, status, start_ms, end_ms):
        run = self.client.create_run(self.experiment_id, start_time=start_ms, tags=tags, run_name=f"trial-{number:04d}")
        self.client.log_batch(run.info.run_id, metrics=[self.Metric(*m) for m in metrics],
                              params=[self.Param(k, v) for k, v in params.items()])
        self.client.set_terminated(run.info.run_id, status=status, end_time=end_ms)

    def ping(self):
        return None

    def run_exists(self, run_id):
        try:
            run = self.client.get_run(run_id)
        except Exception:
            return False
        return run.info.experiment_id == self.experiment_id and run.info.lifecycle_stage == "active"

    def find_study_run(self, study_name):
        runs = self.client.search_runs([self.experiment_id],
                                       f"tags.study_name = '{study_name}' and tags.run_type = 'study'",
                                       max_results=1, order_by=["attributes.start_time DESC"])
        return runs[0].info.run_id if runs else None

    def create_run(self, name, tags):
        return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id

    def set_status(self, run_id, status):
        if status == "RUNNING":
            self.client.update_run(run_id, status=status)
        else:
            self.client.set_terminated(run_id, status=status, end_time=now_ms())

    def finish(self, run_id, metrics, params, tags, artifacts, directory):
        self.client.log_batch(run_id, metrics=[self.Metric(k, float(v), now_ms(), 0) for k, v in metrics.items()],
                              params=[self.Param(k, v) for k, v in params.items()],
                              tags=[self.RunTag(k, v) for k, v in tags.items()])
        for path, folder in artifacts:
            (self.client.log_artifacts if directory else self.client.log_artifact)(run_id, path, folder)
        self.client.set_terminated(run_id, status="FINISHED", end_time=now_ms())

    def claim(self, run_id, key, worker):
        try:
            self.client.log_param(run_id, key, worker)
        except Exception:  # taken: MLflow keeps the first value
            pass
        return self.client.get_run(run_id).data.params[key]

    def logged_trials(self, parent_id):
        found, token = {}, None
        while True:
            page = self.client.search_runs([self.experiment_id], f"tags.`{PARENT}` = '{parent_id}'",
                                           max_results=5000, page_token=token)
            for run in page:
                found.setdefault(run.data.tags["trial_number"], []).append(run.info.status)
            token = page.token
            if not token:
                return found


def _serve(experiment: str) -> None:
    """The MLflow process: requests on stdin, replies on a private copy of stdout, until stdin
    closes. It ignores Ctrl-C and SIGTERM, so an interrupted study can still hand it the trials
    it finished, and it exits at once, dropping what is left, if the study process died: the
    next run logs those trials from Optuna and must not race us for them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    study_pid = os.getppid()
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # MLflow prints to stdout ("View run ...")
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # and costs a get_run per run doing so
    seconds, failed = {}, None

    def reply(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    def short(error: Exception) -> str:
        text = mask_url(str(error)).strip().splitlines()
        return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__

    uri = os.environ["MLFLOW_TRACKING_URI"]
    try:
        if urlparse(uri).scheme == "sqlite":
            _sqlite_without_fsync_per_commit()
        mlflow = _Mlflow(uri, experiment)
    except Exception as e:
        reply({"id": 0, "error": f"is not usable ({short(e)})"})
        return
    reply({"id": 0})
    for line in sys.stdin:
        if os.getppid() != study_pid:
            return
        request = json.loads(line)
        if request["op"] == "trial":
            if failed is None:  # after a failure, drop trial runs until the study hears of it
                start = time.perf_counter()
                try:
                    mlflow.trial(**request["args"])
                    seconds[request["args"]["number"]] = time.perf_counter() - start
                except Exception as e:
                    failed = short(e)
                    reply({"error": failed})  # once: the study reads it before its next send
            continue
        if failed is not None:
            reply({"id": request["id"], "error": failed})
            continue
        try:
            result = getattr(mlflow, request["op"])(**request["args"])
        except Exception as e:
            reply({"id": request["id"], "error": short(e)})
            continue
        reply({"id": request["id"], "result": result, "seconds": seconds})
        seconds = {}


if __name__ == "__main__":
    _serve(sys.argv[1])
    # Every request is answered and every run committed: skip MLflow's and SQLAlchemy's
    # interpreter teardown (most of a second), which the study would otherwise wait for.
    sys.stderr.flush()
    os._exit(0)
