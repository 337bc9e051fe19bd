"""The MLflow process a Tracker starts: requests on stdin, one JSON object per line, replies on
stdout; it owns the MlflowClient (see tracking.py for why a process of its own)."""
import json
import logging
import os
import signal
import sys
import time
from urllib.parse import urlparse

from pipeline.core.config import mask_url
from pipeline.core.tracking import PARENT, now_ms


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
        self.experiment = experiment
        self.experiment_id = self._experiment(experiment)
        self._trial_experiments = {}

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # another worker created it just now
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def trials_experiment_id(self, group):
        """Trial runs live in an experiment per study (group: "<problem> · <optimizer>"), so the
        summary experiment's first screen holds every study (and the report), however many trials they ran."""
        if group not in self._trial_experiments:
            self._trial_experiments[group] = self._experiment(f"{self.experiment} · {group} trials")
        return self._trial_experiments[group]

    def summary_experiment_id(self):
        return self.experiment_id

    def trial(self, number, tags, metrics, params, status, start_ms, end_ms):
        group = f"{tags['problem']} · {tags['optimizer']}"
        run = self.client.create_run(self.trials_experiment_id(group), start_time=start_ms, tags=tags,
                                     run_name=f"{group} trial {number:04d}")
        self.client.log_batch(run.info.run_id, metrics=[self.Metric(*m) for m in metrics],
                              params=[self.Param(k, v) for k, v in params.items()])
        self.client.set_terminated(run.info.run_id, status=status, end_time=end_ms)

    def run(self, name, tags, params, metrics, group):
        experiment_id = self._experiment(f"{self.experiment} · {group}")
        run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        self.client.log_batch(run_id, metrics=[self.Metric(*m) for m in metrics],
                              params=[self.Param(k, v) for k, v in params.items()])
        self.client.set_terminated(run_id, status="FINISHED")

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

    def finish(self, run_id, metrics, params, tags, artifacts, directory, name=None):
        if name:
            self.client.update_run(run_id, name=name)
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

    def delete_unfinished_trial_runs(self, parent_id, group, number):
        """A trial's runs left RUNNING when the store went away between creating and ending them."""
        for run in self.client.search_runs([self.trials_experiment_id(group)],
                                           f"tags.`{PARENT}` = '{parent_id}' and tags.trial_number = '{number}'"):
            if run.info.status == "RUNNING":
                self.client.delete_run(run.info.run_id)

    def logged_trials(self, parent_id, group):
        found, token = {}, None
        while True:
            page = self.client.search_runs([self.trials_experiment_id(group)], f"tags.`{PARENT}` = '{parent_id}'",
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
    # A store error comes back to the study as one line (and the study goes on without MLflow);
    # MLflow would also print its traceback for SQL errors, such as a full disk.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
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
                    reply({"error": failed, "seconds": seconds})  # once: the study reads it before its next send
                    seconds = {}
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
