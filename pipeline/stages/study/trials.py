"""`study` stage: one seeded Optuna study per optimizer, and the life of its trials.

A trial's life, top to bottom in this file: `start` creates or joins the study (its name is a
digest of everything that changes results, search.study_name), finds its MLflow parent run and
fails the trials of dead workers; `run_trials` asks for trials until the budget is counted;
`TrialRunner.run` asks one, records its worker, beats its heartbeat, samples its hyperparameters
(core/space.py), trains its seeds (search.evaluate_trial), tells Optuna (COMPLETE, or PRUNED
with failure "diverged", which TPE ranks below every complete trial), then queues its MLflow run
(mirror.log_own_trial). The outputs are written by outputs.write_outputs.

Ask-and-tell rather than `study.optimize`, for three guarantees optimize() cannot give (Optuna
5.0): an exact budget with racing workers (MaxTrialsCallback stops only after the extra trials
started), a Ctrl-C that never strands a half-asked trial (interrupts are deferred around `ask`),
and a hung worker that wakes after its trial was failed as stale and goes on (optimize() ends in
an AssertionError there, from its `_run_trial`).

Any number of workers (processes here, or on other machines sharing an RDB storage and a tracking
server) can run one study. The Optuna storage is the source of truth; MLflow mirrors it.
"""
import logging
import time
import warnings
from typing import NamedTuple

import optuna
from optuna.trial import TrialState

from pipeline.core import space
from pipeline.core.config import Params
from pipeline.core.data import Dataset
from pipeline.core.interrupts import interrupts_deferred
from pipeline.core.tracking import Tracker
from pipeline.stages.study import labels, mirror, search, storage, workers
from pipeline.stages.study.storage import Failure

log = logging.getLogger(__name__)
PARENT_ATTR = "mlflow_parent_run_id"  # study user attribute: the MLflow parent run every worker logs under
INTERRUPTED = "interrupted: the worker was stopped (Ctrl-C or SIGTERM)"


def is_counted(trial) -> bool:
    """A trial that used budget: completed, or stopped because it diverged (not interrupted)."""
    return trial.state == TrialState.COMPLETE or storage.failure(trial) == Failure.DIVERGED


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():  # we record heartbeats ourselves, see storage.heartbeat()
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        return study.ask()


def _finished_elsewhere(study: optuna.Study, number: int) -> bool:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number).state != TrialState.RUNNING


class TrialRunner:
    """One trial: sample, train the seeds in one engine call, tell Optuna, queue the MLflow run."""

    def __init__(self, optimizer: str, params: Params, dataset: Dataset, store, sink: mirror.Mirror):
        self.optimizer, self.params, self.dataset, self.store, self.sink = optimizer, params, dataset, store, sink

    def run(self, study: optuna.Study):
        """Timings of the trial's parts in seconds, or None if another worker took it over."""
        clock, start, trial = {"train": 0.0, "optuna": 0.0, "mlflow": 0.0}, time.perf_counter(), None
        try:
            with interrupts_deferred():  # a Ctrl-C waits until the new trial is known to be ours
                trial = _ask(study)
                trial.set_user_attr("worker", storage.WORKER)  # so a dead worker's trial is recognized
            with storage.heartbeat(self.store, study, trial.number):
                frozen = self._run(study, trial, clock, start)
        except BaseException as e:
            # We stopped beating for longer than grace_s (a hung or suspended process) and another
            # worker failed the trial as abandoned; it logs the trial, we go on with the next.
            # Optuna says so with UpdateFinishedTrialError when we write an attribute, and with
            # ValueError ("Cannot tell a FAIL trial") when it happens between that and our tell.
            taken_over = (optuna.exceptions.UpdateFinishedTrialError, ValueError)
            if trial is not None and isinstance(e, taken_over) and _finished_elsewhere(study, trial.number):
                log.warning("trial %d was failed as abandoned while this worker was unresponsive", trial.number)
                return None
            if trial is not None:
                interrupted = isinstance(e, KeyboardInterrupt)
                self._fail(study, trial, Failure.INTERRUPTED if interrupted else Failure.ERROR,
                           INTERRUPTED if interrupted else f"error: {type(e).__name__}: {e}")
            raise
        t = time.perf_counter()
        self.sink.on_finished(study, frozen)
        clock["mlflow"] = time.perf_counter() - t
        clock["total"] = time.perf_counter() - start
        return {"number": trial.number, **clock}

    def _run(self, study, trial, clock, t0):
        p = self.params
        study.sampler = search.sampler(p.study.seed, trial.number)
        hyper = space.suggest_all(trial, self.optimizer, p.study.search_space)
        t1 = time.perf_counter()
        result = search.evaluate_trial(hyper, self.optimizer, p, self.dataset)
        t2 = time.perf_counter()
        # The whole record goes into Optuna: the storage is the source of truth, and a worker
        # killed before logging to MLflow has its run written from it later.
        trial.set_user_attr("result", {**result.record, "wall_time_s": t2 - t0})
        if result.diverged_seeds:
            trial.set_user_attr(storage.FAILURE, Failure.DIVERGED.value)
            trial.set_user_attr(storage.REASON, f"diverged: seeds {result.diverged_seeds} hit inf/NaN or blew up")
            frozen = study.tell(trial, state=TrialState.PRUNED)
        else:
            frozen = study.tell(trial, result.value)
        clock["train"], clock["optuna"] = t2 - t1, (t1 - t0) + (time.perf_counter() - t2)
        return frozen

    def _fail(self, study, trial, kind: Failure, reason: str) -> None:
        """Record an interrupted or crashed trial as failed (not counted: a rerun redoes it)."""
        try:
            trial.set_user_attr(storage.FAILURE, kind.value)
            trial.set_user_attr(storage.REASON, reason)
            frozen = study.tell(trial, state=TrialState.FAIL)
        except Exception:  # the storage itself may be what failed; the next worker cleans up
            return
        self.sink.on_finished(study, frozen)


# --- the study ------------------------------------------------------------------------------

class Session(NamedTuple):
    study: optuna.Study
    parent_id: str


def _parent_run(study: optuna.Study, created: bool, tracker: Tracker, tags: dict, wait_s: float, run_name: str) -> str:
    """The study's one MLflow parent run. Optuna refuses a second study of the same name, so the
    worker whose create_study succeeded creates the run and stores its id in the study; a worker
    that arrives meanwhile waits for it. A resumed study reuses it (or finds it by name in this
    tracking store, or gets a new one if the store changed)."""
    if not created:
        deadline = time.monotonic() + (0 if study.get_trials(deepcopy=False) else wait_s)
        while True:
            run_id = study.user_attrs.get(PARENT_ATTR)
            if not (run_id and tracker.run_exists(run_id)):
                run_id = tracker.find_study_run(study.study_name)  # the tracking store changed
            if run_id:
                if study.user_attrs.get(PARENT_ATTR) != run_id:
                    study.set_user_attr(PARENT_ATTR, run_id)
                tracker.reopen(run_id)
                return run_id
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    # A new study gets a new parent run, even if an old one (a deleted storage) has its name.
    run_id = tracker.create_study_run(study.study_name, run_name, tags)
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def start(optimizer: str, params: Params, dataset: Dataset, store, tracker: Tracker, tags: dict) -> Session:
    """Create or join the study, find its parent run, and clean up after dead workers."""
    name = search.study_name(optimizer, params, dataset)
    try:
        study, created = optuna.create_study(study_name=name, storage=store, direction="minimize"), True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(study_name=name, storage=store), False
    if created:  # what optuna-dashboard shows: the objective's name and what the study is
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([params.study.objective])
        for key, value in labels.identity(optimizer, params).items():
            study.set_user_attr(key, value)
    parent_id = _parent_run(study, created, tracker, {**tags, "optimizer": optimizer,
                                                      "params_digest": name.rsplit("-", 1)[1]}, params.study.grace_s,
                            labels.run_name(optimizer, params))
    failed = storage.fail_abandoned(study, store, params.study.grace_s)
    if failed:
        log.info("%s: %d trial(s) left running by a dead worker marked failed", name, failed)
    synced = mirror.sync_mlflow(study, tracker, parent_id, optimizer, params)
    if synced:
        log.info("%s: %d finished trial(s) a dead worker had not logged now logged to MLflow", name, synced)
    return Session(study, parent_id)


def run_trials(session: Session, runner: TrialRunner, target: int, grace_s: float, progress: bool = False) -> list:
    """Run trials until `target` are counted. While the rest of the budget is running in other
    workers, wait for them (failing the trials of workers that die) instead of overshooting."""
    study, timings, bar, last_check = session.study, [], None, 0.0
    done = sum(map(is_counted, study.get_trials(deepcopy=False)))
    log.info("%s: %d of %d trials already done", study.study_name, min(done, target), target)
    if progress and done < target:
        from tqdm import tqdm
        bar = tqdm(total=target, initial=min(done, target), desc=runner.optimizer, unit="trial")
    try:
        while True:
            trials = study.get_trials(deepcopy=False)
            done = sum(map(is_counted, trials))
            if bar:
                bar.update(min(done, target) - bar.n)
            if done >= target:
                return timings
            if done + sum(t.state == TrialState.RUNNING for t in trials) >= target:
                if time.monotonic() - last_check > 1.0:
                    storage.fail_abandoned(study, runner.store, grace_s)
                    last_check = time.monotonic()
                time.sleep(0.05)
                continue
            try:
                timing = runner.run(study)
            except Exception as e:  # a database restart: wait for it (up to study.reconnect_s), then go on
                if not storage.connection_lost(e):
                    raise
                storage.reconnect(study, runner.store, runner.params.study.reconnect_s, e)
                continue
            if timing:
                timings.append(timing)
    finally:
        if bar:
            bar.close()


def run_study(optimizer: str, params: Params, dataset: Dataset, store, tracker: Tracker, parent_tags: dict,
              progress: bool = False, helpers: list = ()) -> tuple:
    """Run this worker's share of the study beside its helper processes (see workers.py); return
    (study, its MLflow mirror, this worker's timings) once the budget is done and logged."""
    try:
        session = start(optimizer, params, dataset, store, tracker, parent_tags)
    except BaseException:
        workers.stop(helpers)
        raise
    sink = mirror.Mirror(tracker, session.parent_id, optimizer, params)
    runner = TrialRunner(optimizer, params, dataset, store, sink)
    try:
        timings = run_trials(session, runner, params.study.n_trials, params.study.grace_s, progress)
        for h in helpers:
            if h.wait() != 0:
                log.warning("helper worker %d exited with code %d; its trials are kept", h.pid, h.returncode)
        sink.sync(session.study)  # also helpers that died
    except BaseException:
        workers.stop(helpers)
        try:
            tracker.flush()  # the trials finished so far, and the interrupted one
            tracker.end(session.parent_id, "KILLED")
        except Exception as e:  # do not hide why we stopped
            log.warning("MLflow not updated on the way out: %s", e)
        raise
    for t in timings:
        t["mlflow_background"] = tracker.seconds.get(t["number"], 0.0)
    return session.study, sink, timings


# --- outputs --------------------------------------------------------------------------------
