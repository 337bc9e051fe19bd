"""`study` stage: one seeded Optuna study per optimizer over the training engine.

Each trial trains `seeds_per_trial` seeds in one batched engine call; its objective is their mean
final loss (or mean loss over the curve). Trials are asked and told by hand (Optuna's ask-and-tell
interface) so that a diverged trial is recorded as failed with its reason, the time of each part
is measured, and a study killed mid-way resumes with only its missing trials.

Outputs under studies/<optimizer>/: trials.csv (deterministic: same params and a fresh storage
give the same bytes), best.json, metrics.json and timings.csv (wall times, which vary).
"""
import csv
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from pipeline import engine, fileio, optimizers
from pipeline.config import Params, Range, mask_url
from pipeline.data import Dataset
from pipeline.errors import PipelineError
from pipeline.tracking import Tracker

log = logging.getLogger(__name__)
STUDIES_DIR = Path("studies")
JOURNAL = "journal"  # params value for the embedded default storage
WORKER = f"{socket.gethostname()}:{os.getpid()}"
EDGE_FRACTION = 0.02  # a best value this close to a range end (as a fraction of its width) is "at the edge"

# Files whose content changes results: part of the study name, so a fix there starts a new study.
_RESULT_CODE = [Path(engine.__file__), Path(optimizers.__file__)]


def study_dir(optimizer: str, root: Path = STUDIES_DIR) -> Path:
    return Path(root) / optimizer


# --- naming and storage ---------------------------------------------------------------------

def study_name(optimizer: str, params: Params, dataset: Dataset) -> str:
    """Optimizer plus a digest of everything that changes the result (n_trials does not: raising
    it extends the same study)."""
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


def open_storage(storage: str, optimizer: str, root: Path = STUDIES_DIR):
    """The embedded journal file (no server), or any Optuna RDB URL, checked before any work."""
    if storage == JOURNAL:
        path = (study_dir(optimizer, root) / "optuna.journal").resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(path), lock_obj=FlockLock(path.with_suffix(".lock")))
        return optuna.storages.JournalStorage(backend)
    try:
        # Heartbeats let any worker fail the trials of a worker that died on another machine.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(storage, heartbeat_interval=10, grace_period=60)
    except Exception as e:
        reason = mask_url(str(getattr(e, "orig", None) or type(e).__name__)).splitlines()[0][:200]
        raise PipelineError(
            f"Optuna storage {mask_url(storage)} is not usable ({reason}): check study.storage or OPTUNA_STORAGE"
        ) from None


# --- search space ---------------------------------------------------------------------------

def suggest(trial: optuna.Trial, name: str, r: Range) -> float:
    if r.scale == "log1m":  # sample 1 - value log-uniformly: fair coverage of memory lengths
        return 1.0 - trial.suggest_float(f"one_minus_{name}", 1.0 - r.high, 1.0 - r.low, log=True)
    return trial.suggest_float(name, r.low, r.high, log=r.scale == "log")


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


# --- trials ---------------------------------------------------------------------------------

def is_counted(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial that used budget: completed, or failed because it diverged (not interrupted)."""
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.FAIL and trial.user_attrs.get("fail_reason", "").startswith("diverged")
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(study: optuna.Study, optimizer: str, storage, tracker: Tracker, parent_id: str,
                        params: Params) -> int:
    """Mark trials left RUNNING by a dead worker as failed (interrupted) and their MLflow runs
    KILLED; complete the MLflow runs of trials that finished in Optuna before the worker died.
    Heartbeat storages catch dead workers anywhere; the journal file relies on the worker's host
    and pid, recorded when the trial starts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, _, pid = t.user_attrs.get("worker", ":").rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
            storage.set_trial_user_attr(t._trial_id, "fail_reason", "interrupted: worker died")
            try:
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                failed += 1
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number, run_id in tracker.running_trials(parent_id).items():
        trial = trials.get(number)
        if trial is not None and is_counted(trial):  # killed between Optuna's tell and MLflow's log
            log_trial(tracker, run_id, optimizer, params, number, trial.user_attrs["result"], trial.value,
                      trial.user_attrs.get("fail_reason", ""))
        elif trial is None or trial.state != TrialState.RUNNING:
            tracker.end(run_id, "KILLED")
    return failed


@contextmanager
def heartbeat(storage, trial_id: int):
    """Record the trial's heartbeat while it runs (RDB storages). Optuna's optimize() does this
    itself; the ask-and-tell interface leaves it to us."""
    interval = storage.get_heartbeat_interval() if isinstance(storage, optuna.storages.RDBStorage) else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat():
        storage.record_heartbeat(trial_id)
        while not stop.wait(interval):
            storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():  # we record heartbeats ourselves, see heartbeat()
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        return study.ask()


def _finite(values) -> list:
    return [float(v) if np.isfinite(v) else None for v in values]


def log_trial(tracker: Tracker, run_id: str, optimizer: str, params: Params, number: int, record: dict,
              value, reason: str) -> None:
    """Complete a trial's MLflow run (one log_batch) from its Optuna record."""
    examples = record["examples"]
    tracker.finish_trial(
        run_id,
        params={"optimizer": optimizer, **record["hyperparams"], "batch_size": params.train.batch_size,
                "epochs": params.train.epochs, "seeds": ",".join(map(str, record["seeds"])), "trial_number": number},
        metrics={**({"objective": value, "final_loss": float(np.mean(record["seed_losses"]))} if value is not None else {}),
                 "wall_time_s": record["wall_time_s"]},
        curves={name: tuple(zip(*[(x, v) for x, v in zip(examples, record[name]) if v is not None])) or ((), ())
                for name in ("loss", "effective_lr")},
        tags={"state": "FAIL" if reason else "COMPLETE", **({"fail_reason": reason} if reason else {})},
        status="FAILED" if reason else "FINISHED",
    )


class Trial:
    """One trial: sample, train the seeds in one engine call, record in Optuna and MLflow."""

    def __init__(self, optimizer: str, params: Params, dataset: Dataset, storage, tracker: Tracker, parent_id: str):
        self.optimizer, self.params, self.dataset, self.storage = optimizer, params, dataset, storage
        self.tracker, self.parent_id = tracker, parent_id
        self.seeds = np.arange(params.study.seeds_per_trial)

    def run(self, study: optuna.Study) -> dict:
        clock = {"train": 0.0, "optuna": 0.0, "mlflow": 0.0}
        start = time.perf_counter()
        trial = _ask(study)
        with heartbeat(self.storage, trial._trial_id):
            return self._run(study, trial, clock, start)

    def _run(self, study, trial, clock, start) -> dict:
        p, t0 = self.params, start
        trial.set_user_attr("worker", WORKER)  # first, so a dead worker's trial can be recognized
        # A sampler seeded per trial number: reproducible, and workers sharing a study never
        # draw the same random start-up points.
        study.sampler = optuna.samplers.TPESampler(seed=p.study.seed * 1_000_003 + trial.number)
        hyper = {h: suggest(trial, h, p.study.search_space[h]) for h in optimizers.get(self.optimizer).hyperparams}
        t1 = time.perf_counter()
        run_id = self.tracker.start_trial(self.parent_id, trial.number, {"optimizer": self.optimizer})
        t2 = time.perf_counter()
        clock["optuna"], clock["mlflow"] = t1 - t0, t2 - t1
        try:
            result = engine.train(self.dataset, self.optimizer, hyper, self.seeds, p.train)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)  # Ctrl-C or an error: not counted, rerun resumes
            self.tracker.end(run_id, "KILLED")
            raise
        t3 = time.perf_counter()
        clock["train"] = t3 - t2
        if result.diverged.any():
            value, state = None, TrialState.FAIL
            reason = f"diverged: seeds {self.seeds[result.diverged].tolist()} hit inf/NaN or blew up"
        else:
            value, state, reason = float(np.mean(result.score(p.study.objective))), TrialState.COMPLETE, ""
        with np.errstate(invalid="ignore"):
            losses, eff_lr = result.losses.mean(axis=0), np.nanmean(result.effective_lr, axis=(0, 2))
        # The whole record goes into Optuna (one write): the storage is the source of truth, and a
        # worker killed before logging to MLflow can have its run completed from it on resume.
        record = {
            "hyperparams": hyper, "seeds": self.seeds.tolist(),
            "seed_losses": [None if d else float(v) for d, v in zip(result.diverged, result.final_loss)],
            "examples": result.examples.tolist(), "loss": _finite(losses), "effective_lr": _finite(eff_lr),
            "wall_time_s": t3 - start,
        }
        trial.set_user_attr("result", record)
        if reason:
            trial.set_user_attr("fail_reason", reason)
        study.tell(trial, value, state=state)
        t4 = time.perf_counter()
        clock["optuna"] += t4 - t3
        log_trial(self.tracker, run_id, self.optimizer, p, trial.number, record, value, reason)
        clock["mlflow"] += time.perf_counter() - t4
        clock["total"] = time.perf_counter() - start
        return {"number": trial.number, **clock}


# --- the study ------------------------------------------------------------------------------

def run_study(optimizer: str, params: Params, dataset: Dataset, storage, tracker: Tracker,
              parent_tags: dict, progress: bool = False) -> tuple:
    """Run the missing trials of the study; return (study, parent run id, timings)."""
    name = study_name(optimizer, params, dataset)
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
    parent_id = tracker.study_run(name, {**parent_tags, "optimizer": optimizer, "params_digest": name.rsplit("-", 1)[1]})
    interrupted = recover_interrupted(study, optimizer, storage, tracker, parent_id, params)
    if interrupted:
        log.info("%s: %d trial(s) left running by a dead worker marked failed", name, interrupted)
    target = params.study.n_trials
    done = sum(is_counted(t) for t in study.get_trials(deepcopy=False))
    log.info("%s: %d of %d trials already done", name, min(done, target), target)
    bar = None
    if progress and done < target:
        from tqdm import tqdm
        bar = tqdm(total=target, initial=done, desc=optimizer, unit="trial")
    runner, timings = Trial(optimizer, params, dataset, storage, tracker, parent_id), []
    try:
        while done < target:
            timings.append(runner.run(study))
            done = sum(is_counted(t) for t in study.get_trials(deepcopy=False))
            if bar:
                bar.update(min(done, target) - bar.n)
    except BaseException:
        tracker.end(parent_id, "KILLED")
        raise
    finally:
        if bar:
            bar.close()
    return study, parent_id, timings


def counted_trials(study: optuna.Study, n_trials: int) -> tuple:
    """The first n_trials counted trials by number, and how many extra ran (racing workers)."""
    counted = sorted((t for t in study.get_trials(deepcopy=False) if is_counted(t)), key=lambda t: t.number)
    return counted[:n_trials], max(0, len(counted) - n_trials)


def _fmt(value) -> str:
    return "" if value is None else repr(float(value))


def write_outputs(study: optuna.Study, optimizer: str, params: Params, out_dir: Path, timings: list) -> dict:
    """trials.csv, best.json, metrics.json and timings.csv; every file written atomically."""
    opt = optimizers.get(optimizer)
    trials, extra = counted_trials(study, params.study.n_trials)
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
        w = csv.DictWriter(f, ["number", "train", "optuna", "mlflow", "total"], lineterminator="\n")
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
