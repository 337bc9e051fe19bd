"""`study` stage: one seeded Optuna study per optimizer, and the life of its trials.

Read `run_trials` first: Optuna's ask-and-tell loop, as its examples write it. Each turn asks a
trial (`owned_trial`), samples its hyperparameters (core/space.py), trains its seeds in one engine
call (search.evaluate_trial), tells Optuna (COMPLETE, or PRUNED with failure "diverged", which TPE
ranks below every complete trial) and hands the finished trial to a sink shaped like an Optuna
callback (`on_finished(study, trial)`; mirror.Mirror logs it to MLflow). Everything that can go
wrong around a trial (a Ctrl-C, a crash, a hung worker whose trial was failed as stale meanwhile)
is handled in `owned_trial`; a restarting database in the loop. This file knows nothing of MLflow.

Ask-and-tell rather than `study.optimize`, for three guarantees optimize() cannot give (Optuna
5.0): an exact budget with racing workers (MaxTrialsCallback stops only after the extra trials
started), a Ctrl-C that never strands a half-asked trial (interrupts are deferred around `ask`),
and a hung worker that wakes after its trial was failed as stale and goes on (optimize() ends in
an AssertionError there, from its `_run_trial`).

Any number of workers (processes here, or on other machines sharing an RDB storage and a tracking
server) can run one study. The Optuna storage is the source of truth; the sink mirrors it.
"""
import logging
import time
import warnings
from contextlib import contextmanager

import optuna
from optuna.trial import TrialState

from pipeline.core import space
from pipeline.core.config import Params
from pipeline.core.data import Dataset
from pipeline.core.interrupts import interrupts_deferred
from pipeline.stages.study import search, storage
from pipeline.stages.study.storage import Failure

log = logging.getLogger(__name__)
INTERRUPTED = "interrupted: the worker was stopped (Ctrl-C or SIGTERM)"


def is_counted(trial) -> bool:
    """A trial that used budget: completed, or stopped because it diverged (not interrupted)."""
    return trial.state == TrialState.COMPLETE or storage.failure(trial) == Failure.DIVERGED


def open_study(optimizer: str, params: Params, dataset: Dataset, store) -> tuple:
    """(study, created): create or join the study named for everything that changes its results,
    and fail the trials its dead workers left running."""
    name = search.study_name(optimizer, params, dataset)
    try:
        study, created = optuna.create_study(study_name=name, storage=store, direction="minimize"), True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(study_name=name, storage=store), False
    if created:  # what optuna-dashboard shows as the objective's name (the mirror adds what the study is)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([params.study.objective])
    failed = storage.fail_abandoned(study, store, params.study.grace_s)
    if failed:
        log.info("%s: %d trial(s) left running by a dead worker marked failed", name, failed)
    return study, created


@contextmanager
def owned_trial(study: optuna.Study, store, sink):
    """Ask a trial and own it for the block: its worker recorded (so a dead worker's trial is
    recognised), its heartbeat beating (RDB storages). If the block fails, the trial is told FAIL
    with why (interrupted or error, not counted: a rerun redoes it) and the error goes on; if it
    was failed as stale while this worker hung, the block's end is skipped and the loop goes on."""
    trial = None
    try:
        with interrupts_deferred():  # a Ctrl-C waits until the new trial is known to be ours
            with warnings.catch_warnings():  # we record heartbeats ourselves, see storage.heartbeat()
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
                trial = study.ask()
            trial.set_user_attr("worker", storage.WORKER)
        with storage.heartbeat(store, study, trial.number):
            yield trial
    except BaseException as e:
        if trial is None:
            raise
        # Another worker failed it as abandoned: Optuna says so with UpdateFinishedTrialError when
        # we write an attribute, and with ValueError ("Cannot tell a FAIL trial") at our tell.
        taken_over = (optuna.exceptions.UpdateFinishedTrialError, ValueError)
        if isinstance(e, taken_over) and study.get_trials(deepcopy=False)[trial.number].state != TrialState.RUNNING:
            log.warning("trial %d was failed as abandoned while this worker was unresponsive", trial.number)
            return
        interrupted = isinstance(e, KeyboardInterrupt)
        with interrupts_deferred():  # told and handed on as one step (see _turn)
            try:
                trial.set_user_attr(storage.FAILURE, (Failure.INTERRUPTED if interrupted else Failure.ERROR).value)
                trial.set_user_attr(storage.REASON, INTERRUPTED if interrupted else f"error: {type(e).__name__}: {e}")
                frozen = study.tell(trial, state=TrialState.FAIL)
            # The storage itself may be what failed (the next worker cleans up), or the trial was
            # told already and the interrupt held over its tell lands here: either way, e goes on.
            except Exception:
                raise e from None
            sink.on_finished(study, frozen)
        raise


def tell(study: optuna.Study, trial: optuna.Trial, result: search.Evaluation, wall_time_s: float):
    """The whole record goes into Optuna first (the storage is the source of truth: a worker killed
    before logging to MLflow has its run written from it later), then the outcome."""
    trial.set_user_attr("result", {**result.record, "wall_time_s": wall_time_s})
    if result.diverged_seeds:
        trial.set_user_attr(storage.FAILURE, Failure.DIVERGED.value)
        trial.set_user_attr(storage.REASON, f"diverged: seeds {result.diverged_seeds} hit inf/NaN or blew up")
        return study.tell(trial, state=TrialState.PRUNED)
    return study.tell(trial, result.value)


def run_trials(study: optuna.Study, optimizer: str, params: Params, dataset: Dataset, store, sink,
               progress: bool = False) -> list:
    """Ask, sample, train, tell and hand to the sink until study.n_trials trials are counted; while
    the rest of the budget is running in other workers, wait for them (failing the trials of
    workers that die) instead of overshooting. Returns this worker's timings per trial."""
    target, p, timings = params.study.n_trials, params.study, []
    bar = _progress(study, optimizer, target) if progress else None
    try:
        while True:
            try:
                if _turn(study, optimizer, params, dataset, store, sink, timings, target, bar):
                    return timings
            except Exception as e:  # a database restart: wait for it (up to study.reconnect_s), then go on
                if not storage.connection_lost(e):
                    raise
                storage.reconnect(study, store, p.reconnect_s, e)
    finally:
        if bar:
            bar.close()


def _turn(study, optimizer, params, dataset, store, sink, timings: list, target: int, bar) -> bool:
    """One turn of the loop: True once the budget is counted; otherwise run one trial, or wait
    while the rest of the budget runs in other workers (failing the trials of workers that die)."""
    p = params.study
    trials = study.get_trials(deepcopy=False)
    done = sum(map(is_counted, trials))
    if bar:
        bar.update(min(done, target) - bar.n)
    if done >= target:
        return True
    if done + sum(t.state == TrialState.RUNNING for t in trials) >= target:
        storage.fail_abandoned(study, store, p.grace_s)
        time.sleep(0.2)
        return False
    t0 = time.perf_counter()
    with owned_trial(study, store, sink) as trial:
        study.sampler = search.sampler(p.seed, trial.number)
        hyper = space.suggest_all(trial, optimizer, p.search_space, params.schedule)
        t1 = time.perf_counter()
        result = search.evaluate_trial(hyper, optimizer, params, dataset)
        t2 = time.perf_counter()
        # A Ctrl-C between the tell and the sink would leave a finished trial that no run mirrors
        # until the next rerun: told and handed on as one step, the interrupt comes after both.
        with interrupts_deferred():
            frozen = tell(study, trial, result, t2 - t0)
            t3 = time.perf_counter()
            sink.on_finished(study, frozen)
        t4 = time.perf_counter()
        timings.append({"number": trial.number, "train": t2 - t1, "optuna": (t1 - t0) + (t3 - t2),
                        "mlflow": t4 - t3, "total": t4 - t0})
    return False


def _progress(study: optuna.Study, optimizer: str, target: int):
    from tqdm import tqdm

    done = sum(map(is_counted, study.get_trials(deepcopy=False)))
    return tqdm(total=target, initial=min(done, target), desc=optimizer, unit="trial") if done < target else None


def run_study(study: optuna.Study, optimizer: str, params: Params, dataset: Dataset, store, sink,
              progress: bool = False, helpers: list = ()) -> list:
    """Run this worker's share of the study beside its helper processes (study/__init__.py) and
    return its timings, once the budget is done and the sink has every finished trial."""
    log.info("%s: %d of %d trials already done", study.study_name,
             min(sum(map(is_counted, study.get_trials(deepcopy=False))), params.study.n_trials), params.study.n_trials)
    try:
        timings = run_trials(study, optimizer, params, dataset, store, sink, progress)
        for h in helpers:
            if h.wait() != 0:
                log.warning("helper worker %d exited with code %d; its trials are kept", h.pid, h.returncode)
        sink.sync(study)  # also what helpers that died left
    except BaseException:
        sink.abort()  # the caller, who started the helpers, stops them
        raise
    for t in timings:
        t["mlflow_background"] = sink.background_seconds(t["number"])
    return timings
