"""What runs in the MLflow process a Tracker starts (tracking.py says why a process of its own):
one MlflowClient, and a plain function per thing the stages ask of it. The Tracker submits these
functions to a one-worker ProcessPoolExecutor, so they run one at a time in the order sent."""
import atexit
import functools
import gc
import logging
import os
import signal
import threading
import time
from urllib.parse import urlparse

from pipeline.core.masking import mask_url

PARENT = "mlflow.parentRunId"
# A lost tracking server fails a run within seconds, not after MLflow's minutes of retries: the
# study goes on without it, and the next run logs what is missing. The user's own settings win.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
_store = {}  # this process's client, experiment ids and the first failure (start fills it)


class TrackingError(Exception):
    """The store failed; the message is one masked line."""


def now_ms() -> int:
    return int(time.time() * 1000)


def _short(error: Exception) -> str:
    text = mask_url(str(error)).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


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
            _sqlite_connections.append(connection)
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()


_sqlite_connections = []  # every SQLite connection this process opened (sqlite3's take no weak references)


def _quick_exit() -> None:
    """Close the SQLite connections (the last close folds the WAL back into the store's one file),
    then keep the interpreter's final garbage collection off MLflow's heap: it took 2 s of every
    stage's end, which waits for this process to exit."""
    import sqlite3

    for connection in _sqlite_connections:
        try:
            connection.close()
        except sqlite3.Error:  # a store that failed (a full disk): SQLite reads its WAL beside it next time
            pass
    gc.freeze()


def _exit_with(study_pid: int) -> None:
    """Exit at once, dropping what is queued, when the study process dies: the next run logs
    those trials from Optuna and must not race us for them."""
    while os.getppid() == study_pid:
        time.sleep(0.2)
    os._exit(0)


def start(uri: str, experiment: str, study_pid: int) -> None:
    """The executor's initializer. It ignores Ctrl-C and SIGTERM, so an interrupted study can still
    hand it the trials it finished. A store that cannot be opened is remembered, not raised: an
    initializer's exception would only say that the pool broke."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    atexit.register(_quick_exit)  # registered first, so it runs last
    threading.Thread(target=_exit_with, args=(study_pid,), daemon=True).start()
    os.dup2(2, 1)  # MLflow prints to stdout ("View run ..."), which is the stage's own
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # and costs a get_run per run doing so
    for name, value in FAIL_FAST.items():
        os.environ.setdefault(name, value)
    # A store error comes back to the study as one line (and the study goes on without MLflow);
    # MLflow would also print its traceback for SQL errors, such as a full disk.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    _store.update(failure=None, experiment=experiment, trial_experiments={})
    try:
        if urlparse(uri).scheme == "sqlite":
            _sqlite_without_fsync_per_commit()
        from mlflow import MlflowClient

        _store["client"] = MlflowClient(tracking_uri=uri)
        _store["experiment_id"] = _experiment(experiment)
    except Exception as e:
        _store["failure"] = f"is not usable ({_short(e)})"


def _op(function):
    """Something the stages ask: after a failure it raises that failure; a store error comes
    back to the study as one masked line, never as MLflow's exception (or its password)."""
    @functools.wraps(function)
    def call(*args, **kwargs):
        if _store["failure"]:
            raise TrackingError(_store["failure"])
        try:
            return function(*args, **kwargs)
        except TrackingError:
            raise
        except Exception as e:
            raise TrackingError(_short(e)) from None
    return call


def _client():
    return _store["client"]


@_op
def hello() -> None:
    """Returns once the store is open and holds the experiment, and (one worker, in order) once
    everything sent before it is written."""


def _experiment(name: str) -> str:
    client = _store["client"]
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another worker created it just now
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@_op
def summary_experiment_id() -> str:
    return _store["experiment_id"]


@_op
def trials_experiment_id(group: str) -> str:
    """Trial runs live in an experiment per study (group: "<problem> · <optimizer>"), so the
    summary experiment's first screen holds every study (and the report), however many trials they ran."""
    known = _store["trial_experiments"]
    if group not in known:
        known[group] = _experiment(f"{_store['experiment']} · {group} trials")
    return known[group]


def _log_batch(run_id: str, metrics=(), params=None, tags=None) -> None:
    from mlflow.entities import Metric, Param, RunTag

    _client().log_batch(run_id, metrics=[Metric(*m) for m in metrics],
                        params=[Param(k, v) for k, v in (params or {}).items()],
                        tags=[RunTag(k, v) for k, v in (tags or {}).items()])


def trial(number: int, group: str, tags: dict, metrics: list, params: dict, status: str, start_ms: int, end_ms: int):
    """One trial's run; the seconds it took. After a failure, later trials are dropped until the
    study hears of it (the rerun logs them from Optuna)."""
    if _store["failure"]:
        return None
    began = time.perf_counter()
    try:
        client = _client()
        run = client.create_run(trials_experiment_id(group), start_time=start_ms, tags=tags,
                                run_name=f"{group} trial {number:04d}")
        _log_batch(run.info.run_id, metrics, params)
        client.set_terminated(run.info.run_id, status=status, end_time=end_ms)
    except Exception as e:
        _store["failure"] = str(e) if isinstance(e, TrackingError) else _short(e)
        raise TrackingError(_store["failure"]) from None
    return time.perf_counter() - began


@_op
def run(name: str, tags: dict, params: dict, metrics: list, group: str) -> None:
    run_id = _client().create_run(_experiment(f"{_store['experiment']} · {group}"), run_name=name, tags=tags).info.run_id
    _log_batch(run_id, metrics, params)
    _client().set_terminated(run_id, status="FINISHED")


@_op
def run_exists(run_id: str) -> bool:
    try:
        found = _client().get_run(run_id)
    except Exception:
        return False
    return found.info.experiment_id == _store["experiment_id"] and found.info.lifecycle_stage == "active"


@_op
def find_study_run(study_name: str):
    runs = _client().search_runs([_store["experiment_id"]],
                                 f"tags.study_name = '{study_name}' and tags.run_type = 'study'",
                                 max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


@_op
def create_run(name: str, tags: dict) -> str:
    return _client().create_run(_store["experiment_id"], run_name=name, tags=tags).info.run_id


@_op
def set_status(run_id: str, status: str) -> None:
    if status == "RUNNING":
        _client().update_run(run_id, status=status)
    else:
        _client().set_terminated(run_id, status=status, end_time=now_ms())


@_op
def finish(run_id: str, metrics: dict, params: dict, tags: dict, artifacts: list, directory: bool, name=None) -> None:
    client = _client()
    if name:
        client.update_run(run_id, name=name)
    _log_batch(run_id, [(k, float(v), now_ms(), 0) for k, v in metrics.items()], params, tags)
    for path, folder in artifacts:
        (client.log_artifacts if directory else client.log_artifact)(run_id, path, folder)
    client.set_terminated(run_id, status="FINISHED", end_time=now_ms())


@_op
def claim(run_id: str, key: str, worker: str) -> str:
    try:
        _client().log_param(run_id, key, worker)
    except Exception:  # taken: MLflow keeps the first value
        pass
    return _client().get_run(run_id).data.params[key]


@_op
def delete_unfinished_trial_runs(parent_id: str, group: str, number: int) -> None:
    """A trial's runs left RUNNING when the store went away between creating and ending them."""
    for found in _client().search_runs([trials_experiment_id(group)],
                                       f"tags.`{PARENT}` = '{parent_id}' and tags.trial_number = '{number}'"):
        if found.info.status == "RUNNING":
            _client().delete_run(found.info.run_id)


@_op
def logged_trials(parent_id: str, group: str) -> dict:
    found, token = {}, None
    while True:
        page = _client().search_runs([trials_experiment_id(group)], f"tags.`{PARENT}` = '{parent_id}'",
                                     max_results=5000, page_token=token)
        for r in page:
            found.setdefault(int(r.data.tags["trial_number"]), []).append(r.info.status)
        token = page.token
        if not token:
            return found
