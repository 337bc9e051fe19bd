"""A small MLflow logger on MlflowClient: one parent run per study, one child run per trial.

Runs are linked through the `mlflow.parentRunId` tag explicitly, never through MLflow's
thread-local active run, so studies and workers can log side by side. A trial's run is written
in one go when the trial ends (create with its tags, one log_batch, set_terminated) by a writer
process fed through a pipe: MLflow's ~30 ms of Python per run then runs on the second core beside
the next trials instead of adding to them (a thread would fight them for the GIL). The Optuna
storage stays the source of truth: a run lost with a killed worker is written again from it
(see study.sync_mlflow).
"""
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from pipeline.config import mask_url
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)
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
    def __init__(self, tracking_uri: str, experiment: str, writer: bool = False):
        """writer: start the trial-run writer now, so that its start-up overlaps the caller's."""
        if urlparse(tracking_uri).scheme in ("http", "https"):
            _check_server(tracking_uri)
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        try:
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
        except Exception as e:  # any backend error: bad URI, unreachable database, locked file
            raise PipelineError(
                f"MLflow tracking at {mask_url(tracking_uri)} is not usable ({type(e).__name__}): "
                f"check MLFLOW_TRACKING_URI"
            ) from None
        self._writer = None
        self._flushes = 0
        self.seconds = {}  # trial number -> seconds the writer spent logging it
        if writer:
            self._start_writer()

    def _start_writer(self) -> None:
        # The URI goes through the environment: a password in it stays out of the process list.
        self._writer = subprocess.Popen(
            [sys.executable, "-m", "pipeline.tracking", self.experiment_id], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": self.uri})

    # --- the study's parent run -------------------------------------------------------------

    def run_exists(self, run_id: str) -> bool:
        try:
            run = self.client.get_run(run_id)
        except Exception:
            return False
        return run.info.experiment_id == self.experiment_id and run.info.lifecycle_stage == "active"

    def find_study_run(self, study_name: str):
        runs = self.client.search_runs([self.experiment_id],
                                       f"tags.study_name = '{study_name}' and tags.run_type = 'study'",
                                       max_results=1, order_by=["attributes.start_time DESC"])
        return runs[0].info.run_id if runs else None

    def create_study_run(self, study_name: str, tags: dict) -> str:
        run = self.client.create_run(self.experiment_id, run_name=study_name,
                                     tags={**tags, "study_name": study_name, "run_type": "study"})
        return run.info.run_id

    def reopen(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status, end_time=now_ms())

    def finish_study(self, run_id: str, metrics: dict, tags: dict, artifact_dir=None) -> None:
        """Best values as metrics and tags, not params: a study extended with more trials may
        find a new best, and MLflow params cannot change once logged."""
        self.client.log_batch(
            run_id, metrics=[Metric(k, float(v), now_ms(), 0) for k, v in metrics.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        if artifact_dir is not None:
            self.client.log_artifacts(run_id, str(artifact_dir))
        self.client.set_terminated(run_id, status="FINISHED")

    # --- trial runs -------------------------------------------------------------------------

    def log_trial(self, parent_id: str, number: int, params: dict, metrics: dict, curves: dict, tags: dict,
                  status: str, start_ms: int, end_ms: int) -> None:
        """Send one trial's run to the writer: params, scalar metrics, curves as {name: (steps,
        values)}. Blocks while the pipe is full (about 20 trials); raises if a write failed."""
        if self._writer is None:
            self._start_writer()
        self._read_replies(block=False)
        points = [[k, float(v), end_ms, 0] for k, v in metrics.items()]
        for name, (steps, values) in curves.items():
            points += [[name, float(v), end_ms, int(s)] for s, v in zip(steps, values)]
        job = {"number": number, "tags": {**tags, PARENT: parent_id, "run_type": "trial", "trial_number": str(number)},
               "metrics": points, "params": {k: str(v) for k, v in params.items()}, "status": status,
               "start_ms": start_ms, "end_ms": end_ms}
        self._send(job)

    def _send(self, job: dict) -> None:
        try:
            self._writer.stdin.write(json.dumps(job) + "\n")
            self._writer.stdin.flush()
        except (BrokenPipeError, OSError):
            raise PipelineError(f"the MLflow writer for {mask_url(self.uri)} stopped (exit code "
                                f"{self._writer.poll()}); rerun the study: its finished trials are kept in "
                                f"Optuna and logged then") from None

    def _read_replies(self, block: bool, until: int = 0) -> None:
        """Read the writer's replies: an error stops the study; a flush reply ends a block."""
        out = self._writer.stdout
        while block or select.select([out], [], [], 0)[0]:
            line = out.readline()
            if not line:
                raise PipelineError(f"the MLflow writer for {mask_url(self.uri)} stopped (exit code "
                                    f"{self._writer.wait()}); rerun the study: its finished trials are kept "
                                    f"in Optuna and logged then")
            reply = json.loads(line)
            if "error" in reply:
                raise PipelineError(f"MLflow logging to {mask_url(self.uri)} failed ({reply['error']}); rerun "
                                    f"the study: its finished trials are kept in Optuna and logged then")
            self.seconds.update({int(k): v for k, v in reply.get("seconds", {}).items()})
            if block and reply.get("flushed") == until:
                return

    def flush(self) -> None:
        """Wait until every trial sent so far is in MLflow."""
        if self._writer is None:
            return
        self._flushes += 1
        self._send({"flush": self._flushes})
        self._read_replies(block=True, until=self._flushes)

    def close(self) -> None:
        """Let the writer finish what it has and exit."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stdin.close()
            writer.wait()
            writer.stdout.close()

    def logged_trials(self, parent_id: str) -> dict:
        """trial number -> its child runs' statuses, over every page of results."""
        found, token = {}, None
        while True:
            page = self.client.search_runs([self.experiment_id], f"tags.`{PARENT}` = '{parent_id}'",
                                           max_results=5000, page_token=token)
            for run in page:
                found.setdefault(int(run.data.tags["trial_number"]), []).append(run.info.status)
            token = page.token
            if not token:
                return found

    def child_runs(self, parent_id: str) -> list:
        return self.client.search_runs([self.experiment_id], f"tags.`{PARENT}` = '{parent_id}'", max_results=50000)

    # --- the report -------------------------------------------------------------------------

    def log_report(self, name: str, params: dict, metrics: dict, tags: dict, artifacts: list) -> str:
        """The evaluation and report as one run, with the report and its figures as artifacts."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags={**tags, "run_type": "report"})
        run_id = run.info.run_id
        self.client.log_batch(
            run_id, metrics=[Metric(k, float(v), now_ms(), 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        for path, folder in artifacts:
            self.client.log_artifact(run_id, str(path), folder)
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id


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


def _write_runs(experiment_id: str) -> None:
    """The writer process: one JSON job per line on stdin, replies on stdout, until stdin closes.
    It ignores Ctrl-C and SIGTERM so that an interrupted study can still hand it the trials it
    finished; it exits when the study closes the pipe, and at once, dropping what is left, if the
    study died: the next run logs those trials from Optuna, and must not race us for them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    study_pid = os.getppid()
    uri = os.environ["MLFLOW_TRACKING_URI"]
    if urlparse(uri).scheme == "sqlite":
        _sqlite_without_fsync_per_commit()
    # Replies get the pipe to ourselves: MLflow prints to stdout (a "View run" line per run on a
    # tracking server), which now goes to stderr instead.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # and the extra get_run it costs per run
    client, seconds = MlflowClient(tracking_uri=uri), {}

    def reply(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    for line in sys.stdin:
        if os.getppid() != study_pid:
            return
        job = json.loads(line)
        if "flush" in job:
            reply({"flushed": job["flush"], "seconds": seconds})
            seconds = {}
            continue
        start = time.perf_counter()
        try:
            run = client.create_run(experiment_id, start_time=job["start_ms"], tags=job["tags"],
                                    run_name=f"trial-{job['number']:04d}")
            client.log_batch(run.info.run_id, metrics=[Metric(*m) for m in job["metrics"]],
                             params=[Param(k, v) for k, v in job["params"].items()])
            client.set_terminated(run.info.run_id, status=job["status"], end_time=job["end_ms"])
        except Exception as e:
            text = mask_url(str(e)).strip().splitlines()[0][:200] if str(e) else ""
            reply({"error": f"{type(e).__name__}: {text}"})
        seconds[job["number"]] = time.perf_counter() - start


if __name__ == "__main__":
    _write_runs(sys.argv[1])
