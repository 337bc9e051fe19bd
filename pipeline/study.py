"""`study` stage: one seeded Optuna study per optimizer over the training engine.

Each trial trains `seeds_per_trial` seeds in one batched engine call; its objective is their mean
final loss (or mean loss over the curve). Trials are asked and told by hand (Optuna's ask-and-tell
interface) so that a diverged trial is recorded as failed with its reason and the time of each
part is measured.

Any number of workers (processes here, or on other machines sharing an RDB storage and a tracking
server) can run one study: each runs trials until `n_trials` are done or in progress elsewhere. The
Optuna storage is the source of truth; MLflow mirrors it, and anything a dead worker left unlogged
is logged from the storage by the next worker (sync_mlflow).

Outputs under studies/<optimizer>/: trials.csv (the first n_trials counted trials by number;
deterministic for one worker: same params and a fresh storage give the same bytes), best.json,
metrics.json and timings.csv (wall times, which vary).
"""
import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import optuna
from optuna.trial import TrialState

from pipeline import engine, fileio, optimizers, storage, workers
from pipeline.config import Params, Range
from pipeline.data import Dataset
from pipeline.errors import PipelineError
from pipeline.tracking import Tracker

log = logging.getLogger(__name__)
EDGE_FRACTION = 0.02  # a best value this close to a range end (as a fraction of its width) is "at the edge"
PARENT_ATTR = "mlflow_parent_run_id"  # study user attribute: the MLflow parent run every worker logs under
INTERRUPTED = "interrupted: the worker was stopped (Ctrl-C or SIGTERM)"

# Files whose content changes results: part of the study name, so a fix there starts a new study.
_RESULT_CODE = [Path(engine.__file__), Path(optimizers.__file__)]


# --- naming ---------------------------------------------------------------------------------

def study_name(optimizer: str, params: Params, dataset: Dataset) -> str:
    """Optimizer plus a digest of everything that changes the result (n_trials does not: raising
    it extends the same study; nor do workers and heartbeats)."""
    opt = optimizers.get(optimizer)
    identity = {
        "optimizer": optimizer,
        "search_space": {h: dataclasses.asdict(params.study.search_space[h]) for h in opt.hyperparams},
        "train": dataclasses.asdict(params.train),
        "seeds_per_trial": params.study.seeds_per_trial,
        "sampler_seed": params.study.seed,
        "objective": params.study.objective,
        "data": hashlib.sha256(dataset.features.tobytes() + dataset.target.tobytes()).hexdigest(),
        "code": hashlib.sha256(b"".join(p.read_bytes() for p in _RESULT_CODE)).hexdigest(),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{optimizer}-{digest[:16]}"


# --- search space ---------------------------------------------------------------------------

def suggest(trial: optuna.Trial, name: str, r: Range) -> float:
    if r.scale == "log1m":  # sample 1 - value log-uniformly: fair coverage of memory lengths
        return 1.0 - trial.suggest_float(f"one_minus_{name}", 1.0 - r.high, 1.0 - r.low, log=True)
    return trial.suggest_float(name, r.low, r.high, log=r.scale == "log")


def sampled_hyperparams(trial, optimizer: str, space: dict) -> dict:
    """The hyperparameters a trial was given, from Optuna's own record (also for trials that
    were interrupted before they produced a result)."""
    found = {}
    for h in optimizers.get(optimizer).hyperparams:
        if space[h].scale == "log1m" and f"one_minus_{h}" in trial.params:
            found[h] = 1.0 - trial.params[f"one_minus_{h}"]
        elif h in trial.params:
            found[h] = trial.params[h]
    return found


def _position(value: float, r: Range) -> float:
    """Where value lies in its range, 0..1, on the scale it is sampled on."""
    f = {"linear": lambda v: v, "log": math.log, "log1m": lambda v: -math.log(1.0 - v)}[r.scale]
    return (f(value) - f(r.low)) / (f(r.high) - f(r.low))


def edge_warnings(best: dict, space: dict) -> list:
    found = []
    for name, value in best.items():
        pos = _position(value, space[name])
        if pos < EDGE_FRACTION or pos > 1 - EDGE_FRACTION:
            end = "low" if pos < 0.5 else "high"
            found.append(f"best {name} = {value:.6g} lies at the {end} edge of its range "
                         f"[{space[name].low}, {space[name].high}]: widen study.search_space.{name}")
    return found


# --- trials and their MLflow runs -----------------------------------------------------------

def is_counted(trial) -> bool:
    """A trial that used budget: completed, or failed because it diverged (not interrupted)."""
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.FAIL and storage.fail_reason(trial).startswith("diverged")
    )


def _run_status(trial) -> str:
    if trial.state == TrialState.COMPLETE:
        return "FINISHED"
    return "KILLED" if storage.fail_reason(trial).startswith("interrupted") else "FAILED"


def log_trial(tracker: Tracker, parent_id: str, optimizer: str, params: Params, trial) -> None:
    """Queue the MLflow run of a finished trial, built from its Optuna record alone: the live
    worker and whoever logs a dead worker's trial later write the same run."""
    record, reason = trial.user_attrs.get("result"), storage.fail_reason(trial)
    hyper = record["hyperparams"] if record else sampled_hyperparams(trial, optimizer, params.study.search_space)
    metrics, curves = {}, {}
    if record:
        curves = {name: tuple(zip(*[(x, v) for x, v in zip(record["examples"], record[name]) if v is not None]))
                  or ((), ()) for name in ("loss", "effective_lr")}
        metrics["wall_time_s"] = record["wall_time_s"]
        if trial.value is not None:
            metrics.update(objective=trial.value, final_loss=float(np.mean(record["seed_losses"])))
    tags = {"optimizer": optimizer, "state": trial.state.name, **({"fail_reason": reason} if reason else {})}
    end = trial.datetime_complete or trial.datetime_start
    tracker.log_trial(
        parent_id, trial.number,
        params={"optimizer": optimizer, **hyper, "batch_size": params.train.batch_size, "epochs": params.train.epochs,
                "seeds": ",".join(map(str, range(params.study.seeds_per_trial))), "trial_number": trial.number},
        metrics=metrics, curves=curves, tags=tags, status=_run_status(trial),
        start_ms=int(trial.datetime_start.timestamp() * 1000), end_ms=int(end.timestamp() * 1000),
    )


def sync_mlflow(study: optuna.Study, tracker: Tracker, parent_id: str, optimizer: str, params: Params) -> int:
    """Log every finished trial that has no MLflow run and whose worker will not log it: this
    worker (called when its own queue is empty), a dead one, a trial failed as abandoned, or one
    finished longer than grace_s ago. Other live workers' trials are left to them, so no trial is
    logged twice. Returns how many."""
    tracker.flush()
    logged, now, added = tracker.logged_trials(parent_id), time.time(), 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING or t.number in logged:
            continue
        mine = storage.owner(t) == (storage.HOST, os.getpid())
        abandoned = storage.fail_reason(t) in (storage.NO_HEARTBEAT, storage.WORKER_DIED)
        stale = now - (t.datetime_complete or t.datetime_start).timestamp() > params.study.grace_s
        if mine or storage.owner_gone(t) or abandoned or stale:
            log_trial(tracker, parent_id, optimizer, params, t)
            added += 1
    tracker.flush()
    return added


@contextmanager
def _interrupts_deferred():
    """Hold SIGINT and SIGTERM (raised as KeyboardInterrupt, see cli) until the block is done.
    Python runs signal handlers in the main thread, so swapping the handler is enough here, where
    blocking the signal would not be: TensorFlow's own threads would still receive it."""
    received = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            raise KeyboardInterrupt


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():  # we record heartbeats ourselves, see storage.heartbeat()
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        return study.ask()


def _finite(values) -> list:
    return [float(v) if np.isfinite(v) else None for v in values]


class TrialRunner:
    """One trial: sample, train the seeds in one engine call, tell Optuna, queue the MLflow run."""

    def __init__(self, optimizer: str, params: Params, dataset: Dataset, store, tracker: Tracker, parent_id: str):
        self.optimizer, self.params, self.dataset, self.store = optimizer, params, dataset, store
        self.tracker, self.parent_id = tracker, parent_id
        self.seeds = np.arange(params.study.seeds_per_trial)

    def run(self, study: optuna.Study):
        """Timings of the trial's parts in seconds, or None if another worker took it over."""
        clock, start, trial = {"train": 0.0, "optuna": 0.0, "mlflow": 0.0}, time.perf_counter(), None
        try:
            with _interrupts_deferred():  # a Ctrl-C waits until the new trial is known to be ours
                trial = _ask(study)
                trial.set_user_attr("worker", storage.WORKER)  # so a dead worker's trial is recognized
            with storage.heartbeat(self.store, trial._trial_id):
                frozen = self._run(study, trial, clock, start)
        except optuna.exceptions.UpdateFinishedTrialError:
            # We stopped beating for longer than grace_s (a hung or suspended process) and another
            # worker failed the trial as abandoned; it logs the trial, we go on with the next.
            log.warning("trial %d was failed as abandoned while this worker was unresponsive", trial.number)
            return None
        except BaseException as e:
            if trial is not None:
                reason = INTERRUPTED if isinstance(e, KeyboardInterrupt) else f"error: {type(e).__name__}: {e}"
                self._fail(study, trial, reason)
            raise
        t = time.perf_counter()
        log_trial(self.tracker, self.parent_id, self.optimizer, self.params, frozen)
        clock["mlflow"] = time.perf_counter() - t
        clock["total"] = time.perf_counter() - start
        return {"number": trial.number, **clock}

    def _run(self, study, trial, clock, t0):
        p = self.params
        # A sampler seeded per trial number: reproducible, and workers sharing a study never
        # draw the same random start-up points.
        study.sampler = optuna.samplers.TPESampler(seed=p.study.seed * 1_000_003 + trial.number)
        hyper = {h: suggest(trial, h, p.study.search_space[h]) for h in optimizers.get(self.optimizer).hyperparams}
        t1 = time.perf_counter()
        result = engine.train(self.dataset, self.optimizer, hyper, self.seeds, p.train)
        t2 = time.perf_counter()
        if result.diverged.any():
            value, state = None, TrialState.FAIL
            reason = f"diverged: seeds {self.seeds[result.diverged].tolist()} hit inf/NaN or blew up"
        else:
            value, state, reason = float(np.mean(result.score(p.study.objective))), TrialState.COMPLETE, ""
        with np.errstate(invalid="ignore"):
            losses, eff_lr = result.losses.mean(axis=0), np.nanmean(result.effective_lr, axis=(0, 2))
        # The whole record goes into Optuna: the storage is the source of truth, and a worker
        # killed before logging to MLflow has its run written from it later.
        trial.set_user_attr("result", {
            "hyperparams": hyper, "seeds": self.seeds.tolist(),
            "seed_losses": [None if d else float(v) for d, v in zip(result.diverged, result.final_loss)],
            "examples": result.examples.tolist(), "loss": _finite(losses), "effective_lr": _finite(eff_lr),
            "wall_time_s": t2 - t0,
        })
        if reason:
            trial.set_user_attr(storage.REASON, reason)
        frozen = study.tell(trial, value, state=state)
        clock["train"], clock["optuna"] = t2 - t1, (t1 - t0) + (time.perf_counter() - t2)
        return frozen

    def _fail(self, study, trial, reason: str) -> None:
        """Record an interrupted or crashed trial as failed (not counted: a rerun redoes it)."""
        try:
            trial.set_user_attr(storage.REASON, reason)
            frozen = study.tell(trial, state=TrialState.FAIL)
        except Exception:  # the storage itself may be what failed; the next worker cleans up
            return
        log_trial(self.tracker, self.parent_id, self.optimizer, self.params, frozen)


# --- the study ------------------------------------------------------------------------------

class Session(NamedTuple):
    study: optuna.Study
    parent_id: str


def _parent_run(study: optuna.Study, created: bool, tracker: Tracker, tags: dict, wait_s: float) -> str:
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
    run_id = tracker.create_study_run(study.study_name, tags)
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def start(optimizer: str, params: Params, dataset: Dataset, store, tracker: Tracker, tags: dict) -> Session:
    """Create or join the study, find its parent run, and clean up after dead workers."""
    name = study_name(optimizer, params, dataset)
    try:
        study, created = optuna.create_study(study_name=name, storage=store, direction="minimize"), True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(study_name=name, storage=store), False
    parent_id = _parent_run(study, created, tracker, {**tags, "optimizer": optimizer,
                                                      "params_digest": name.rsplit("-", 1)[1]}, params.study.grace_s)
    failed = storage.fail_abandoned(study, params.study.grace_s)
    if failed:
        log.info("%s: %d trial(s) left running by a dead worker marked failed", name, failed)
    synced = sync_mlflow(study, tracker, parent_id, optimizer, params)
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
                    storage.fail_abandoned(study, grace_s)
                    last_check = time.monotonic()
                time.sleep(0.05)
                continue
            timing = runner.run(study)
            if timing:
                timings.append(timing)
    finally:
        if bar:
            bar.close()


def run_study(optimizer: str, params: Params, dataset: Dataset, store, tracker: Tracker, parent_tags: dict,
              progress: bool = False, helpers: list = ()) -> tuple:
    """Run this worker's share of the study beside its helper processes (see workers.py); return
    (study, parent run id, this worker's timings) once the budget is done and logged."""
    try:
        session = start(optimizer, params, dataset, store, tracker, parent_tags)
    except BaseException:
        workers.stop(helpers)
        raise
    runner = TrialRunner(optimizer, params, dataset, store, tracker, session.parent_id)
    try:
        timings = run_trials(session, runner, params.study.n_trials, params.study.grace_s, progress)
        for h in helpers:
            if h.wait() != 0:
                log.warning("helper worker %d exited with code %d; its trials are kept", h.pid, h.returncode)
        sync_mlflow(session.study, tracker, session.parent_id, optimizer, params)  # also helpers that died
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
    return session.study, session.parent_id, timings


# --- outputs --------------------------------------------------------------------------------

def counted_trials(study: optuna.Study, n_trials: int) -> tuple:
    """The first n_trials counted trials by number, and how many extra ran (racing workers)."""
    counted = sorted((t for t in study.get_trials(deepcopy=False) if is_counted(t)), key=lambda t: t.number)
    return counted[:n_trials], max(0, len(counted) - n_trials)


def _fmt(value) -> str:
    return "" if value is None else repr(float(value))


TIMING_FIELDS = ["number", "train", "optuna", "mlflow", "total", "mlflow_background"]


def write_outputs(study: optuna.Study, optimizer: str, params: Params, out_dir: Path, timings: list) -> dict:
    """trials.csv, best.json, metrics.json and timings.csv; every file written atomically."""
    opt = optimizers.get(optimizer)
    trials, extra = counted_trials(study, params.study.n_trials)
    if len(trials) < params.study.n_trials:
        raise PipelineError(f"{optimizer}: only {len(trials)} of {params.study.n_trials} trials are done: "
                            f"rerun `python -m pipeline study {optimizer}` to finish the study")
    seeds = params.study.seeds_per_trial
    with fileio.atomic_path(out_dir / "trials.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["number", "state", "diverged", "objective", *opt.hyperparams,
                    *[f"final_loss_seed_{i}" for i in range(seeds)]])
        for t in trials:
            result = t.user_attrs["result"]
            w.writerow([t.number, t.state.name, int(t.state == TrialState.FAIL), _fmt(t.value),
                        *[_fmt(result["hyperparams"][h]) for h in opt.hyperparams],
                        *[_fmt(v) for v in result["seed_losses"]]])
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise PipelineError(f"{optimizer}: all {len(trials)} trials diverged: lower study.search_space.lr.high")
    best = min(complete, key=lambda t: (t.value, t.number))
    best_hyper = best.user_attrs["result"]["hyperparams"]
    edge = edge_warnings(best_hyper, params.study.search_space)
    for message in edge:
        log.warning("%s: %s", optimizer, message)
    if extra:
        log.info("%s: %d extra trial(s) finished by racing workers; outputs use the first %d by number",
                 optimizer, extra, params.study.n_trials)
    fileio.write_json(out_dir / "best.json", {
        "optimizer": optimizer, "study_name": study.study_name, "objective": params.study.objective,
        "value": best.value, "hyperparams": best_hyper, "trial_number": best.number, "warnings": edge,
    })
    metrics = {
        "best_value": best.value, **{f"best_{h}": v for h, v in best_hyper.items()},
        "trials": len(trials), "complete": len(complete), "diverged": len(trials) - len(complete),
        "interrupted": sum(t.state == TrialState.FAIL and not is_counted(t) for t in study.get_trials(deepcopy=False)),
        "extra_trials": extra,
    }
    fileio.write_json(out_dir / "metrics.json", metrics)
    with fileio.atomic_path(out_dir / "timings.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, TIMING_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows({k: (v if k == "number" else f"{v:.6f}") for k, v in row.items()} for row in timings)
    return {"best": best, "metrics": metrics, "warnings": edge}


def log_study_summary(tracker: Tracker, parent_id: str, study: optuna.Study, optimizer: str, outcome: dict) -> None:
    """Best values on the parent run, and Optuna's own plots as artifacts."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna import visualization as vis

    metrics = {k: v for k, v in outcome["metrics"].items()}
    best = outcome["best"]
    tags = {"best_trial": best.number, **{f"best_{h}": v for h, v in best.user_attrs["result"]["hyperparams"].items()}}
    if outcome["warnings"]:
        tags["warnings"] = " | ".join(outcome["warnings"])
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backends are marked experimental
        plots = {"optimization_history": lambda: vis.matplotlib.plot_optimization_history(study),
                 "slice": lambda: vis.matplotlib.plot_slice(study)}
        if optimizer == "rmsprop":
            plots["lr_gamma_contour"] = lambda: vis.matplotlib.plot_contour(study, params=["lr", "one_minus_gamma"])
        for name, plot in plots.items():
            ax = plot()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.savefig(Path(tmp) / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(fig)
        tracker.finish_study(parent_id, metrics, tags, tmp)
