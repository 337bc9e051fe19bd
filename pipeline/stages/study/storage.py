"""Optuna storage: the embedded journal file or any RDB URL, and trials whose worker is gone.

Every worker records itself on each trial it runs (`worker` = host:pid). A trial left RUNNING is
abandoned when its worker is known dead (same host, pid gone: caught at once) or, on RDB storages,
when its heartbeat is older than the grace period (any host: a killed machine, a hung process;
Optuna's own fail_stale_trials). The journal storage has no heartbeat in Optuna, hence the pid
check here. Abandoned trials are failed with a reason, never counted, and their hyperparameters
are kept. Why a trial did not complete is data: its `failure` user attribute, a Failure value.
"""
import enum
import fcntl
import logging
import os
import random
import socket
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.trial import TrialState

from pipeline.core.config import StudyParams
from pipeline.core.masking import mask_url
from pipeline.core.errors import PipelineError
from pipeline.core.interrupts import interrupts_deferred
from pipeline.core.paths import STUDIES_DIR
from pipeline.stages.study import journal

log = logging.getLogger(__name__)
JOURNAL = "journal"  # params value for the embedded default storage
HOST = socket.gethostname()
WORKER = f"{HOST}:{os.getpid()}"
REASON = "fail_reason"  # user attribute: why, in words
FAILURE = "failure"  # user attribute: why, as a Failure value


class Failure(str, enum.Enum):
    """Why a trial did not complete."""

    DIVERGED = "diverged"  # counted: it used budget; told as PRUNED, which TPE ranks below every complete trial
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM; not counted, a rerun redoes it
    WORKER_DIED = "worker_died"  # its worker's pid is gone, or it died before recording itself
    NO_HEARTBEAT = "no_heartbeat"  # failed by Optuna's stale-trial check (RDB storages): no attribute at all
    ERROR = "error"  # an exception in the objective


ABANDONED = (Failure.INTERRUPTED, Failure.WORKER_DIED, Failure.NO_HEARTBEAT)  # not counted; MLflow says KILLED
NO_HEARTBEAT = "interrupted: its worker stopped sending heartbeats"
WORKER_DIED = "interrupted: its worker died"
LOST_STORAGE = "interrupted: the connection to the Optuna storage was lost"


class FlockLock:
    """The journal file's lock, held with flock(2). The kernel drops it when its holder dies, so a
    killed worker never leaves a stale lock behind; Optuna's own file locks would make the next
    run wait out a 30-second grace period. Local disks only: use an RDB storage across machines."""

    def __init__(self, path: Path):
        self._path, self._fd = str(path), None

    def acquire(self) -> bool:
        # The fd is ours before the (interruptible) wait: whatever interrupt comes next, release()
        # closes it, and closing drops the lock. Held in a local only, a Ctrl-C landing just after
        # flock returned would strand the lock and block this process's next acquire for good.
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return True

    def release(self) -> None:
        with interrupts_deferred():
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)  # drops the flock with it


def open_storage(url: str, study: StudyParams, root: Path = STUDIES_DIR):
    """The journal file studies/optuna.journal (url "journal"; one file holds every study, so one
    `optuna-dashboard studies/optuna.journal` shows them all), or an Optuna RDB
    storage, connected and checked before any work. Errors name the URL with its password masked."""
    heartbeat_s, grace_s = study.heartbeat_s, study.grace_s
    if url == JOURNAL:
        path = (Path(root) / "optuna.journal").resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(journal.Journal(path, FlockLock(path.with_suffix(".lock"))))
    engine_kwargs = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        # A worker that hangs inside a transaction would hold its trial's row lock, and the worker
        # failing that trial would wait forever; PostgreSQL ends such a session after grace_s.
        engine_kwargs["connect_args"] = {"connect_timeout": 10,
                                         "options": f"-c idle_in_transaction_session_timeout={grace_s * 1000}"}
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(4):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                                                  grace_period=grace_s)
        except (IntegrityError, ProgrammingError) as e:
            # Workers starting together on a new database race to create Optuna's tables, and
            # PostgreSQL can fail the losers' CREATE TABLE IF NOT EXISTS; the tables exist now.
            error = e
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
        except Exception as e:
            error = e
            break
    raise PipelineError(f"Optuna storage {mask_url(url)} is not usable ({_reason(error)}): "
                        f"check study.storage or OPTUNA_STORAGE")


def _reason(error: Exception) -> str:
    """First line of a driver error, password masked: SQLAlchemy wraps the driver's in .orig."""
    text = str(getattr(error, "orig", None) or error) or type(error).__name__
    return mask_url(text).strip().splitlines()[0][:200]


def connection_lost(error: BaseException) -> bool:
    """True when an error (or what caused it: Optuna wraps SQLAlchemy's) is a lost database
    connection, a restarting server, rather than a bug or bad data."""
    from sqlalchemy import exc

    seen = error
    while seen is not None:
        if isinstance(seen, (exc.OperationalError, exc.InterfaceError)) or \
                (isinstance(seen, exc.DBAPIError) and seen.connection_invalidated):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def reconnect(study: optuna.Study, storage, timeout_s: float, error: BaseException) -> None:
    """Wait until the database answers again (SQLAlchemy's pre-ping replaces the dead
    connections), then fail this worker's trials the outage interrupted: not counted, redone.
    Past timeout_s, stop in one line; the rerun resumes."""
    url = mask_url(storage.url)
    log.warning("lost the Optuna storage %s (%s); waiting up to %s s for it", url, _reason(error), timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            break
        except Exception as e:
            if not connection_lost(e):
                raise
            if time.monotonic() > deadline:
                raise PipelineError(f"Optuna storage {url} unreachable for {timeout_s} s ({_reason(e)}): rerun once it "
                                    f"is back (finished trials are kept), or raise study.reconnect_s") from None
            time.sleep(1.0)
    for t in running:
        if owner(t) == (HOST, os.getpid()):
            try:
                tid = trial_id(storage, study, t.number)
                storage.set_trial_user_attr(tid, REASON, LOST_STORAGE)
                storage.set_trial_user_attr(tid, FAILURE, Failure.INTERRUPTED.value)
                storage.set_trial_state_values(tid, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # its tell reached the database after all
    log.warning("the Optuna storage %s is back; the interrupted trial is run again", url)


def has_heartbeat(storage) -> bool:
    """RDB storages opened here (open_storage sets the interval)."""
    return isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval() is not None


def trial_id(storage, study: optuna.Study, number: int) -> int:
    """The storage's id of a trial, through the storage's public interface."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


@contextmanager
def heartbeat(storage, study: optuna.Study, number: int):
    """Record the trial's heartbeat while it runs (RDB storages). Optuna's optimize() does this
    itself; the ask-and-tell interface leaves it to us."""
    if not has_heartbeat(storage):
        yield
        return
    trial_id_ = trial_id(storage, study, number)
    interval, stop = storage.get_heartbeat_interval(), threading.Event()

    def beat():
        while True:
            try:
                storage.record_heartbeat(trial_id_)
            except Exception as e:  # a lost connection: the trial may be failed as stale, not the worker
                log.warning("heartbeat of trial %d not recorded: %s", number, _reason(e))
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def owner(trial) -> tuple:
    """(host, pid) of the worker that ran the trial; ("", 0) if it died before saying."""
    host, _, pid = trial.user_attrs.get("worker", ":").rpartition(":")
    return host, int(pid) if pid.isdigit() else 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_gone(trial) -> bool:
    """True when the trial's worker is known dead: it ran on this host and its pid is gone."""
    host, pid = owner(trial)
    return host == HOST and pid != os.getpid() and not (pid and pid_alive(pid))


def fail_abandoned(study: optuna.Study, storage, grace_s: float) -> int:
    """Fail RUNNING trials whose worker is gone; return how many. Same-host workers are checked
    by pid (at once), any worker by heartbeat on RDB storages (after grace_s), and a trial whose
    worker died before recording itself after grace_s."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return 0
    now, failed = time.time(), 0
    for t in running:  # the precise cause first: a dead pid on this host
        silent = "worker" not in t.user_attrs and now - t.datetime_start.timestamp() > grace_s
        if owner_gone(t) or silent:
            try:
                tid = trial_id(storage, study, t.number)
                storage.set_trial_user_attr(tid, REASON, WORKER_DIED)
                storage.set_trial_user_attr(tid, FAILURE, Failure.WORKER_DIED.value)
                storage.set_trial_state_values(tid, TrialState.FAIL)
                failed += 1
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # its worker finished it after all, or another worker failed it first
    if has_heartbeat(storage) and len(running) > failed:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        failed = len(running) - len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    return failed


def failure(trial):
    """Why a finished trial did not complete (a Failure), or None if it completed."""
    if trial.state == TrialState.COMPLETE or trial.state == TrialState.RUNNING:
        return None
    return Failure(trial.user_attrs.get(FAILURE, Failure.NO_HEARTBEAT.value))


def fail_reason(trial) -> str:
    """Why, in words ("" for a completed or running trial)."""
    kind = failure(trial)
    if kind is None:
        return ""
    return trial.user_attrs.get(REASON, NO_HEARTBEAT if kind == Failure.NO_HEARTBEAT else kind.value)
