"""The study as people see it. Its labels: the MLflow run name and group, and its identity as
Optuna user attributes for optuna-dashboard (kept out of search.py, so rewording a label never
changes a study's name). Its trials mirrored into MLflow: one child run per finished trial, built
from its Optuna record alone, so the worker that ran it and whoever logs a dead worker's trial
later write the same run. The Optuna storage is the source of truth; MLflow is a view of it.

Who logs a trial: its own worker, at once. Anyone else only once its worker cannot (gone, failed
as abandoned) or has not for grace_s, and then only after claiming it in MLflow (Tracker.claim:
a write-once param on the study's parent run), so two finishing workers never log it twice.
"""
import logging
import os
import time

import numpy as np
from optuna.trial import TrialState

from pipeline.core import problems, schedules, space
from pipeline.core.paths import study_label
from pipeline.core.config import Params
from pipeline.core.errors import PipelineError
from pipeline.core.tracking import Tracker
from pipeline.stages.study import storage

log = logging.getLogger(__name__)
PARENT_ATTR = "mlflow_parent_run_id"  # study user attribute: the MLflow parent run every worker logs under


def _ranges(optimizer: str, params: Params) -> dict:
    r = params.study.search_space
    return {h: f"{r[h].low:g}" if r[h].low == r[h].high else f"{r[h].low:g}..{r[h].high:g}"
            for h in space.searched(optimizer, params.schedule)}


def identity(optimizer: str, params: Params) -> dict:
    """What the study is, as Optuna user attributes a person reads in optuna-dashboard."""
    t, ranges = params.train, params.study.search_space
    init = problems.get(params.problem).init_label(t)
    return {"problem": params.problem, "model": problems.get(params.problem).description, "optimizer": optimizer,
            "schedule": schedules.get(params.schedule).label,
            "search_space": {h: f"{r} ({ranges[h].scale})" for h, r in _ranges(optimizer, params).items()},
            "protocol": f"batch {t.batch_size}, {t.epochs} epochs, init {init}, loss recorded "
                        f"every {t.record_every} examples",
            "objective": f"{params.study.objective}, mean over seeds 0..{params.study.seeds_per_trial - 1}"}


def group(optimizer: str, params: Params) -> str:
    """A study as a person names it, e.g. `mlp · rmsprop`, or `mlp · rmsprop · cosine` with a schedule
    other than constant: its trials experiment is `<experiment> · <group> trials`."""
    return study_label(params.problem, optimizer, params.schedule)


def run_name(optimizer: str, params: Params) -> str:
    """The study's MLflow run, e.g. `mlp · rmsprop · 100 trials · lr 0.0001..1, gamma 0.5..0.999`."""
    ranges = ", ".join(f"{h} {r}" for h, r in _ranges(optimizer, params).items())
    return f"{group(optimizer, params)} · {params.study.n_trials} trials · {ranges}"


class Mirror:
    """Where a finished trial goes after Optuna: its MLflow run, shaped like an Optuna callback
    (`on_finished(study, trial)`, and `sync(study)` for what dead workers left). MLflow is a view:
    if the tracking store goes away mid-study the study goes on, Optuna keeps every trial, and
    the next run of the stage logs the missing runs (each once, see sync_mlflow)."""

    def __init__(self, tracker: Tracker, parent_id: str, optimizer: str, params: Params):
        self.tracker, self.parent_id, self.optimizer, self.params = tracker, parent_id, optimizer, params
        self.group = group(optimizer, params)
        self.lost = None  # why MLflow stopped taking runs, once it did

    @classmethod
    def attach(cls, tracker: Tracker, study, created: bool, optimizer: str, params: Params, tags: dict) -> "Mirror":
        """The study's mirror: its one parent run found or made, and the finished trials dead
        workers left unlogged logged now. MLflow must work here, before any trial runs."""
        if created:
            for key, value in identity(optimizer, params).items():
                study.set_user_attr(key, value)
        tags = {**tags, "problem": params.problem, "optimizer": optimizer, "schedule": params.schedule, "params_digest": study.study_name.rsplit("-", 1)[1]}
        parent_id = _parent_run(study, created, tracker, tags, params.study.grace_s, run_name(optimizer, params))
        synced = sync_mlflow(study, tracker, parent_id, optimizer, params)
        if synced:
            log.info("%s: %d finished trial(s) a dead worker had not logged now logged to MLflow", study.study_name,
                     synced)
        return cls(tracker, parent_id, optimizer, params)

    def abort(self) -> None:
        """On the way out of an interrupted study: the trials finished so far in, the parent run KILLED."""
        try:
            self.tracker.flush()
            self.tracker.end(self.parent_id, "KILLED")
        except Exception as e:  # do not hide why we stopped
            log.warning("MLflow not updated on the way out: %s", e)

    def background_seconds(self, number: int) -> float:
        """How long MLflow's process took to write trial `number` (0 if not known)."""
        return self.tracker.seconds.get(number, 0.0)

    def on_finished(self, study, trial) -> None:
        if self.lost is None:
            self._guarded(log_own_trial, self.tracker, self.parent_id, self.optimizer, self.params, trial)

    def sync(self, study) -> int:
        if self.lost is not None:
            return 0
        return self._guarded(sync_mlflow, study, self.tracker, self.parent_id, self.optimizer, self.params) or 0

    def _guarded(self, action, *args):
        try:
            return action(*args)
        except PipelineError as e:
            self.lost = str(e)
            log.warning("%s; the study goes on without MLflow (Optuna keeps every trial)", e)

    def report_waiting(self, study) -> int:
        """One line: how many of this worker's finished trials MLflow has not confirmed."""
        confirmed = set(self.tracker.seconds)
        waiting = [t.number for t in study.get_trials(deepcopy=False)
                   if t.state != TrialState.RUNNING and storage.owner(t) == (storage.HOST, os.getpid())
                   and t.number not in confirmed]
        log.warning("%d trial run(s) of %s are waiting for MLflow: rerun `python -m pipeline study %s --problem %s` once "
                    "tracking is back (Optuna keeps them; each is logged once)", len(waiting), study.study_name,
                    self.optimizer, self.params.problem)
        return len(waiting)


def _parent_run(study, created: bool, tracker: Tracker, tags: dict, wait_s: float, run_name: str) -> str:
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


def run_status(trial) -> str:
    """The MLflow status of a finished trial's run."""
    if trial.state == TrialState.COMPLETE:
        return "FINISHED"
    return "KILLED" if storage.failure(trial) in storage.ABANDONED else "FAILED"


def log_trial(tracker: Tracker, parent_id: str, optimizer: str, params: Params, trial) -> None:
    """Queue the MLflow run of a finished trial."""
    record, reason = trial.user_attrs.get("result"), storage.fail_reason(trial)
    hyper = record["hyperparams"] if record else space.sampled_hyperparams(trial, optimizer, params.study.search_space,
                                                                              params.schedule)
    metrics, curves = {}, {}
    if record:
        curves = {name: tuple(zip(*[(x, v) for x, v in zip(record["examples"], record[name]) if v is not None]))
                  or ((), ()) for name in ("loss", "effective_lr")}
        metrics["wall_time_s"] = record["wall_time_s"]
        if trial.state == TrialState.COMPLETE:
            metrics.update(objective=trial.value, final_loss=float(np.mean(record["seed_losses"])))
    kind = storage.failure(trial)
    tags = {"problem": params.problem, "optimizer": optimizer, "schedule": params.schedule, "state": trial.state.name,
            **({"fail_reason": reason, "failure": kind.value} if kind else {})}
    end = trial.datetime_complete or trial.datetime_start
    tracker.log_trial(
        parent_id, group(optimizer, params), trial.number,
        params={"problem": params.problem, "optimizer": optimizer, "schedule": params.schedule, **hyper,
                "batch_size": params.train.batch_size, "epochs": params.train.epochs,
                "seeds": ",".join(map(str, range(params.study.seeds_per_trial))), "trial_number": trial.number},
        metrics=metrics, curves=curves, tags=tags, status=run_status(trial),
        start_ms=int(trial.datetime_start.timestamp() * 1000), end_ms=int(end.timestamp() * 1000),
    )


def log_own_trial(tracker: Tracker, parent_id: str, optimizer: str, params: Params, trial) -> None:
    """This worker's trial, just finished: ours to log, unless it is so late that others may
    already be logging it."""
    end = trial.datetime_complete or trial.datetime_start
    if time.time() - end.timestamp() <= params.study.grace_s or claim(tracker, parent_id, trial.number):
        log_trial(tracker, parent_id, optimizer, params, trial)


def claim(tracker: Tracker, parent_id: str, number: int) -> bool:
    """True if this worker may log the trial: it holds the claim, or took over one whose holder
    died on this host before logging (its claim is then superseded by a numbered one)."""
    for attempt in range(100):
        holder = tracker.claim(parent_id, f"mirror.trial_{number:05d}" + (f".{attempt}" if attempt else ""),
                               storage.WORKER)
        if holder == storage.WORKER:
            return True
        host, _, pid = holder.rpartition(":")
        if not (host == storage.HOST and pid.isdigit() and not storage.pid_alive(int(pid))):
            return False
    return False


def sync_mlflow(study, tracker: Tracker, parent_id: str, optimizer: str, params: Params) -> int:
    """Log every finished trial that has no MLflow run and whose worker will not log it: this
    worker's own (called when its queue is empty), a dead one's, a trial failed as abandoned, or
    one finished longer than grace_s ago. Other live workers' recent trials are left to them, and
    every trial not our own is claimed first, so no trial is logged twice. Returns how many."""
    tracker.flush()
    trials_group = group(optimizer, params)
    logged, now, added = tracker.logged_trials(parent_id, trials_group), time.time(), 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            continue
        mine = storage.owner(t) == (storage.HOST, os.getpid())
        abandoned = storage.failure(t) in (storage.Failure.WORKER_DIED, storage.Failure.NO_HEARTBEAT)
        stale = now - (t.datetime_complete or t.datetime_start).timestamp() > params.study.grace_s
        # A run left RUNNING by a worker that is gone: the store went away while it was written.
        broken = set(logged.get(t.number, ())) == {"RUNNING"} and not mine and (storage.owner_gone(t) or stale)
        if t.number in logged and not broken:
            continue
        if mine and not stale:
            log_trial(tracker, parent_id, optimizer, params, t)
            added += 1
        elif (mine or storage.owner_gone(t) or abandoned or stale) and claim(tracker, parent_id, t.number):
            if broken:
                tracker.delete_unfinished_trial_runs(parent_id, trials_group, t.number)
            log_trial(tracker, parent_id, optimizer, params, t)
            added += 1
    tracker.flush()
    return added
