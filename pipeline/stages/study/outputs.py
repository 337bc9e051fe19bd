"""The study stage's outputs under studies/<problem>/<optimizer>/<schedule>/: trials.csv (the first n_trials counted
trials by number; deterministic for one worker: same params and a fresh storage give the same
bytes), best.json, metrics.json and timings.csv (wall times, which vary); and the study's summary
on its MLflow parent run, with Optuna's own plots.
"""
import csv
import logging
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

import optuna
from optuna.trial import TrialState

from pipeline.core import fileio, optimizers, space
from pipeline.core.config import Params
from pipeline.core.errors import PipelineError
from pipeline.core.tracking import Tracker
from pipeline.stages.study import mirror, search, storage
from pipeline.stages.study.trials import is_counted

log = logging.getLogger(__name__)


def counted_trials(study: optuna.Study, n_trials: int) -> tuple:
    """The first n_trials counted trials by number, and how many extra ran (racing workers)."""
    counted = sorted((t for t in study.get_trials(deepcopy=False) if is_counted(t)), key=lambda t: t.number)
    return counted[:n_trials], max(0, len(counted) - n_trials)


def _fmt(value) -> str:
    return "" if value is None else repr(float(value))


TIMING_FIELDS = ["number", "train", "optuna", "mlflow", "total", "mlflow_background"]


class StudyOutcome(NamedTuple):
    """What a finished study's outputs say: its best trial, its metrics.json and its edge warnings."""

    best: optuna.trial.FrozenTrial
    metrics: dict  # metrics.json: best_value, best_<h>, trials, complete, diverged, interrupted, extra_trials
    warnings: list  # a best value at the edge of its range

    @property
    def best_hyperparams(self) -> dict:
        return self.best.user_attrs["result"]["hyperparams"]


def write_outputs(study: optuna.Study, optimizer: str, params: Params, out_dir: Path, timings: list) -> StudyOutcome:
    """trials.csv, best.json, metrics.json and timings.csv; every file written atomically."""
    opt, searched = optimizers.get(optimizer), space.searched(optimizer, params.schedule)
    trials, extra = counted_trials(study, params.study.n_trials)
    if len(trials) < params.study.n_trials:
        raise PipelineError(f"{optimizer}: only {len(trials)} of {params.study.n_trials} trials are done: "
                            f"rerun `python -m pipeline study {optimizer} --problem {params.problem} --schedule "
                            f"{params.schedule}` to finish the study")
    seeds = params.study.seeds_per_trial
    with fileio.atomic_path(out_dir / "trials.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["number", "state", "diverged", "objective", *searched,
                    *[f"final_loss_seed_{i}" for i in range(seeds)]])
        for t in trials:
            result = t.user_attrs["result"]
            w.writerow([t.number, t.state.name, int(storage.failure(t) == storage.Failure.DIVERGED), _fmt(t.value),
                        *[_fmt(result["hyperparams"][h]) for h in searched],
                        *[_fmt(v) for v in result["seed_losses"]]])
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise PipelineError(f"{optimizer}: all {len(trials)} trials diverged: narrow study.search_space "
                            f"({', '.join(opt.hyperparams)}) towards smaller steps")
    best = min(complete, key=lambda t: (t.value, t.number))
    best_hyper = best.user_attrs["result"]["hyperparams"]
    edge = search.edge_warnings(best_hyper, params.study.search_space)
    for message in edge:
        log.warning("%s: %s", optimizer, message)
    if extra:
        log.info("%s: %d extra trial(s) finished by racing workers; outputs use the first %d by number",
                 optimizer, extra, params.study.n_trials)
    fileio.write_json(out_dir / "best.json", {
        "problem": params.problem, "optimizer": optimizer, "schedule": params.schedule, "study_name": study.study_name, "objective": params.study.objective,
        "value": best.value, "hyperparams": best_hyper, "trial_number": best.number, "warnings": edge,
    })
    metrics = {
        "best_value": best.value, **{f"best_{h}": v for h, v in best_hyper.items()},
        "trials": len(trials), "complete": len(complete), "diverged": len(trials) - len(complete),
        "interrupted": sum(storage.failure(t) in storage.ABANDONED for t in study.get_trials(deepcopy=False)),
        "extra_trials": extra,
    }
    fileio.write_json(out_dir / "metrics.json", metrics)
    with fileio.atomic_path(out_dir / "timings.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, TIMING_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows({k: (v if k == "number" else f"{v:.6f}") for k, v in row.items()} for row in timings)
    return StudyOutcome(best, metrics, edge)


def log_study_summary(tracker: Tracker, parent_id: str, study: optuna.Study, optimizer: str, outcome: StudyOutcome,
                      params: Params) -> None:
    """Best values on the parent run, and Optuna's own plots as artifacts."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna import visualization as vis

    metrics = dict(outcome.metrics)
    tags = {"best_trial": outcome.best.number, **{f"best_{h}": v for h, v in outcome.best_hyperparams.items()}}
    if outcome.warnings:
        tags["warnings"] = " | ".join(outcome.warnings)
    tags["mlflow.note.content"] = _note(tracker, study, optimizer, outcome, params)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backends are marked experimental
        plots = {"optimization_history": lambda: vis.matplotlib.plot_optimization_history(study),
                 "slice": lambda: vis.matplotlib.plot_slice(study)}
        ranges = params.study.search_space  # a fixed setting (low = high) has nothing to plot
        names = {h: space.optuna_name(h, ranges[h]) for h in space.searched(optimizer, params.schedule)
                 if ranges[h].low < ranges[h].high}
        pairs = [(a, b) for i, a in enumerate(names) for b in list(names)[i + 1:]]
        for a, b in pairs:  # every pair of hyperparameters, under Optuna's names for them
            plots[f"{a}_{b}_contour"] = lambda a=a, b=b: vis.matplotlib.plot_contour(study, params=[names[a], names[b]])
        for name, plot in plots.items():
            ax = plot()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.savefig(Path(tmp) / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(fig)
        tracker.finish_study(parent_id, metrics, tags, tmp, name=mirror.run_name(optimizer, params))


def _note(tracker: Tracker, study, optimizer: str, outcome: StudyOutcome, params: Params) -> str:
    """The study's description on its MLflow run (Markdown): what it searched, its best trial,
    and where its trial runs are."""
    m, best = outcome.metrics, outcome.best
    summary_id, trials_id = tracker.experiment_ids(mirror.group(optimizer, params))
    identity = mirror.identity(optimizer, params)
    hyper = ", ".join(f"{h} {v:.4g}" for h, v in outcome.best_hyperparams.items())
    return (f"**{mirror.group(optimizer, params)}**: Optuna study `{study.study_name}` (TPE, seed {params.study.seed}), "
            f"{m['trials']} trials ({m['diverged']} diverged) over "
            f"{', '.join(f'{h} {r}' for h, r in identity['search_space'].items())}; {identity['protocol']}; "
            f"objective {identity['objective']}.\n\n"
            f"Best: trial {best.number}, {params.study.objective} {best.value:.6f} with {hyper}.\n\n"
            f"Trial runs: [{mirror.group(optimizer, params)} trials](#/experiments/{trials_id}?workflowType=machine_learning).")
