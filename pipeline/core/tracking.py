"""MLflow logging in a process of its own: one parent run per study, one child run per trial.

The stages never import MLflow. A Tracker starts a one-worker ProcessPoolExecutor whose
initializer opens the MlflowClient (tracking_worker.py) and submits that module's functions to
it. Why not MLflow's client in the stage's own process: measured on the 2-core machine, a trial's
run costs 11.2 ms there (median; create_run, log_batch, set_terminated on SQLite in WAL mode) and
12.8 ms with MLflow's asynchronous logging (`log_batch(synchronous=False)`: run creation and
termination stay synchronous), against 15 ms for the whole rest of a trial; and importing MLflow
takes 1.3 s that here overlaps TensorFlow's import. In the worker, that work runs on the second
core. One worker runs what it is sent in order: a trial's run is submitted without waiting, and
any later call returns only once the runs before it are written.

Runs are linked through the `mlflow.parentRunId` tag explicitly, never through MLflow's
thread-local active run. The Optuna storage stays the source of truth: a run lost with a killed
worker is written again from it (see stages/study/mirror.py).
"""
import multiprocessing
import os
import threading
import urllib.error
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from urllib.parse import urlparse

from pipeline.core import tracking_worker as worker
from pipeline.core.masking import mask_url
from pipeline.core.errors import PipelineError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PARENT = worker.PARENT
now_ms = worker.now_ms


def local_store(uri: str):
    """The file of a SQLite tracking store (None for any other kind)."""
    from pathlib import Path

    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


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
        # spawn, not fork: the stage may hold TensorFlow's threads. The URI, password and all,
        # goes through the executor's pipe: it stays out of the process list.
        self._pool = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), worker.start,
                                         (tracking_uri, experiment, os.getpid()))
        self._hello = self._pool.submit(worker.hello)
        self._lock = threading.Lock()  # for callers in several threads (evaluate's problems)
        self._sent = []  # (trial number, future) of trial runs not yet known to be written
        self.seconds = {}  # trial number -> seconds MLflow took to log it

    def _failure(self, what: str) -> PipelineError:
        return PipelineError(f"MLflow tracking at {mask_url(self.uri)} {what}: rerun the study (its finished "
                             f"trials are kept in Optuna and logged then), or check MLFLOW_TRACKING_URI")

    def _result(self, future):
        try:
            return future.result()
        except worker.TrackingError as e:
            raise self._failure(f"failed ({e})") from None
        except BrokenProcessPool:
            raise self._failure("stopped (its process exited)") from None

    def _written(self) -> None:
        """Collect the trial runs written so far; the first that failed raises."""
        while self._sent and self._sent[0][1].done():
            number, future = self._sent.pop(0)
            seconds = self._result(future)
            if seconds is not None:
                self.seconds[number] = seconds

    def _call(self, function, *args, **kwargs):
        with self._lock:
            self.ready()
            self._written()
            result = self._result(self._pool.submit(function, *args, **kwargs))
            self._written()  # the one worker wrote every earlier run first
            return result

    def ready(self) -> None:
        self._result(self._hello)

    # --- the study's parent run -------------------------------------------------------------

    def run_exists(self, run_id: str) -> bool:
        return self._call(worker.run_exists, run_id)

    def find_study_run(self, study_name: str):
        return self._call(worker.find_study_run, study_name)

    def create_study_run(self, study_name: str, run_name: str, tags: dict) -> str:
        return self._call(worker.create_run, run_name, {**tags, "study_name": study_name, "run_type": "study"})

    def experiment_ids(self, group: str) -> tuple:
        """(the summary experiment, a study's trials experiment; group "<problem> · <optimizer>"), for links."""
        return self._call(worker.summary_experiment_id), self._call(worker.trials_experiment_id, group)

    def reopen(self, run_id: str) -> None:
        self._call(worker.set_status, run_id, "RUNNING")

    def end(self, run_id: str, status: str) -> None:
        self._call(worker.set_status, run_id, status)

    def finish_study(self, run_id: str, metrics: dict, tags: dict, artifact_dir=None, name=None) -> None:
        """Best values as metrics and tags, not params: a study extended with more trials may
        find a new best, and MLflow params cannot change once logged."""
        self._call(worker.finish, run_id=run_id, metrics=metrics, params={}, tags={k: str(v) for k, v in tags.items()},
                   name=name,
                   artifacts=[[str(artifact_dir), None]] if artifact_dir else [], directory=True)

    # --- trial runs -------------------------------------------------------------------------

    def log_trial(self, parent_id: str, group: str, number: int, params: dict, metrics: dict, curves: dict,
                  tags: dict, status: str, start_ms: int, end_ms: int) -> None:
        """Send one trial's run to its study's trials experiment (`group`, paths.study_label) without
        waiting: params, scalar metrics, curves as {name: (steps, values)}; raises if an earlier run
        could not be written."""
        points = [(k, float(v), end_ms, 0) for k, v in metrics.items()]
        for name, (steps, values) in curves.items():
            points += [(name, float(v), end_ms, int(s)) for s, v in zip(steps, values)]
        tags = {**tags, PARENT: parent_id, "run_type": "trial", "trial_number": str(number)}
        with self._lock:
            self.ready()
            self._written()
            self._sent.append((number, self._pool.submit(worker.trial, number, group, tags, points,
                                                         {k: str(v) for k, v in params.items()}, status, start_ms, end_ms)))

    def claim(self, parent_id: str, key: str, worker_name: str) -> str:
        """Write-once param `key` = worker on the study's run; returns who holds it (MLflow refuses
        to change a logged param, atomically, so exactly one worker gets its own name back)."""
        return self._call(worker.claim, parent_id, key, worker_name)

    def flush(self) -> None:
        """Wait until every trial sent so far is in MLflow."""
        self._call(worker.hello)

    def delete_unfinished_trial_runs(self, parent_id: str, group: str, number: int) -> None:
        self._call(worker.delete_unfinished_trial_runs, parent_id, group, number)

    def logged_trials(self, parent_id: str, group: str) -> dict:
        """trial number -> its child runs' statuses."""
        return self._call(worker.logged_trials, parent_id, group)

    def log_run(self, group: str, name: str, tags: dict, params: dict, metrics: dict, curves: dict) -> None:
        """A run in the experiment `<experiment> · <group>`: scalar metrics, and curves as
        {name: (steps, values)}."""
        points = [(k, float(v), now_ms(), 0) for k, v in metrics.items()]
        points += [(k, float(v), now_ms(), int(s)) for k, (steps, values) in curves.items() for s, v in zip(steps, values)]
        self._call(worker.run, name=name, tags={k: str(v) for k, v in tags.items()},
                   params={k: str(v) for k, v in params.items()}, metrics=points, group=group)

    # --- the report -------------------------------------------------------------------------

    def log_report(self, name: str, params: dict, metrics: dict, tags: dict, artifacts: list) -> str:
        """The evaluation and report as one run; artifacts are (file, folder or None) pairs."""
        run_id = self._call(worker.create_run, name, {**tags, "run_type": "report"})
        self._call(worker.finish, run_id=run_id, metrics=metrics, params={k: str(v) for k, v in params.items()}, tags={},
                   artifacts=[[str(path), folder] for path, folder in artifacts], directory=False)
        return run_id

    def close(self) -> None:
        """Let the MLflow process finish what it was sent, and exit."""
        self._pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
