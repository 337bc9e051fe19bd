"""Optuna storage: the embedded journal file or any RDB URL, and trials whose worker is gone.

Every worker records itself on each trial it runs (`worker` = host:pid). A trial left RUNNING is
abandoned when its worker is known dead (same host, pid gone: caught at once) or, on RDB storages,
when its heartbeat is older than the grace period (any host: a killed machine, a hung process).
Abandoned trials are failed with a reason, never counted, and their hyperparameters are kept.
"""
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
from optuna.storages._heartbeat import is_heartbeat_enabled  # what fail_stale_trials checks
from optuna.trial import TrialState

from pipeline.config import StudyParams, mask_url
from pipeline.errors import PipelineError
from pipeline.paths import STUDIES_DIR

log = logging.getLogger(__name__)
JOURNAL = "journal"  # params value for the embedded default storage
HOST = socket.gethostname()
WORKER = f"{HOST}:{os.getpid()}"
REASON = "fail_reason"
# A FAIL trial without a reason was failed by Optuna's stale-trial check: no heartbeat.
NO_HEARTBEAT = "interrupted: its worker stopped sending heartbeats"
WORKER_DIED = "interrupted: its worker died"


class FlockLock:
    """The journal file's lock, held with flock(2). The kernel drops it when its holder dies, so a
    killed worker never leaves a stale lock behind; Optuna's own file locks would make the next
    run wait out a 30-second grace period. Local disks only: use an RDB storage across machines."""

    def __init__(self, path: Path):
        self._path, self._fd = str(path), None

    def acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def study_dir(optimizer: str, root: Path = STUDIES_DIR) -> Path:
    """studies/<optimizer>/: the stage's outputs, and the journal file if that is the storage."""
    return Path(root) / optimizer


def open_storage(url: str, optimizer: str, study: StudyParams, root: Path = STUDIES_DIR):
    """The journal file studies/<optimizer>/optuna.journal (url "journal"), or an Optuna RDB
    storage, connected and checked before any work. Errors name the URL with its password masked."""
    heartbeat_s, grace_s = study.heartbeat_s, study.grace_s
    if url == JOURNAL:
        path = (study_dir(optimizer, root) / "optuna.journal").resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(path), lock_obj=FlockLock(path.with_suffix(".lock")))
        return optuna.storages.JournalStorage(backend)
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


def has_heartbeat(storage) -> bool:
    """RDB storages opened here, also as wrapped by Optuna's cache inside a study."""
    return is_heartbeat_enabled(storage)


@contextmanager
def heartbeat(storage, trial_id: int):
    """Record the trial's heartbeat while it runs (RDB storages). Optuna's optimize() does this
    itself; the ask-and-tell interface leaves it to us."""
    if not has_heartbeat(storage):
        yield
        return
    interval, stop = storage.get_heartbeat_interval(), threading.Event()

    def beat():
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception as e:  # a lost connection: the trial may be failed as stale, not the worker
                log.warning("heartbeat of trial id %d not recorded: %s", trial_id, _reason(e))
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


def _pid_alive(pid: int) -> bool:
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
    return host == HOST and pid != os.getpid() and not (pid and _pid_alive(pid))


def fail_abandoned(study: optuna.Study, grace_s: float) -> int:
    """Fail RUNNING trials whose worker is gone; return how many. Same-host workers are checked
    by pid (at once), any worker by heartbeat on RDB storages (after grace_s), and a trial whose
    worker died before recording itself after grace_s."""
    storage, failed = study._storage, 0
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return 0
    now = time.time()
    for t in running:  # the precise cause first: a dead pid on this host
        silent = "worker" not in t.user_attrs and now - t.datetime_start.timestamp() > grace_s
        if owner_gone(t) or silent:
            try:
                storage.set_trial_user_attr(t._trial_id, REASON, WORKER_DIED)
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                failed += 1
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # its worker finished it after all, or another worker failed it first
    if has_heartbeat(storage) and len(running) > failed:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        failed = len(running) - len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    return failed


def fail_reason(trial) -> str:
    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get(REASON, NO_HEARTBEAT)
    return ""
