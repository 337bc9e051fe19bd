"""Optuna's samplers against the landscape's ground truth: TPE, random, quasi-random (Sobol) and
CMA-ES, each repeated over `evaluate.sampler_repeats` seeds on the study's protocol and budget.

No feedback is needed to batch trials across studies: at trial t every (sampler, repeat) study
asks one trial, the engine trains all of them in one call, and each is told its value. Studies
live in memory and log no per-trial MLflow runs; the stage logs one run per (optimizer, sampler).
CMA-ES needs two or more dimensions: on a one-hyperparameter space Optuna's CmaEsSampler samples
every trial with its independent sampler (random), which the outputs say.
"""
import warnings

import numpy as np
import optuna
from optuna.trial import TrialState

from pipeline.core import engine, optimizers, space
from pipeline.core.config import Params
from pipeline.core.data import Dataset

SAMPLERS = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "qmc": lambda seed: optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed),
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed),
}


def compare(dataset: Dataset, optimizer: str, params: Params, penalty: float) -> list:
    """Rows (optimizer, sampler, repeat, trials, best_so_far, hyperparams of that best) for every
    budget 1..n_trials. A diverged trial is told PRUNED, as in the study, and scores `penalty`
    (the initial loss) in best_so_far, the one divergence rule."""
    p = params.study
    seeds = np.arange(p.seeds_per_trial)
    keys = [(name, r) for name in SAMPLERS for r in range(params.evaluate.sampler_repeats)]
    with warnings.catch_warnings():  # QMC and CMA-ES are marked experimental; CMA-ES warns on 1-D spaces
        warnings.simplefilter("ignore")
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        studies = {(name, r): optuna.create_study(direction="minimize", sampler=SAMPLERS[name](p.seed * 1000 + r))
                   for name, r in keys}
        best = {key: (np.inf, {}) for key in keys}
        rows = []
        for t in range(1, p.n_trials + 1):
            asked = {key: studies[key].ask() for key in keys}
            hypers = {key: space.suggest_all(trial, optimizer, p.search_space) for key, trial in asked.items()}
            names = optimizers.get(optimizer).hyperparams
            grid = {h: np.repeat([hypers[key][h] for key in keys], len(seeds)) for h in names}
            result = engine.train(dataset, optimizer, grid, np.tile(seeds, len(keys)), params.train,
                                  params.problem)
            score = result.score(p.objective).reshape(len(keys), -1)
            diverged = result.diverged.reshape(len(keys), -1).any(axis=1)
            for i, key in enumerate(keys):
                if diverged[i]:  # as in the study: PRUNED, which TPE ranks below every completed trial
                    studies[key].tell(asked[key], state=TrialState.PRUNED)
                    value = penalty
                else:
                    value = float(score[i].mean())
                    studies[key].tell(asked[key], value)
                if value < best[key][0]:
                    best[key] = (value, hypers[key])
                rows.append({"optimizer": optimizer, "sampler": key[0], "repeat": key[1], "trials": t,
                             "best_so_far": best[key][0], "hyperparams": best[key][1]})
    return rows


def summarise(rows: list, random_search: np.ndarray, n_trials: int) -> dict:
    """Per sampler: median regret at the full budget, and the budget at which its median
    best-so-far first reaches what random search is expected to reach in n_trials."""
    out = {}
    for name in SAMPLERS:
        mine = [r for r in rows if r["sampler"] == name]
        repeats = sorted({r["repeat"] for r in mine})
        curves = np.array([[r["best_so_far"] for r in mine if r["repeat"] == k] for k in repeats])
        median = np.median(curves, axis=0)
        final = [r["regret"] for r in mine if r["trials"] == n_trials]
        hit = np.flatnonzero(median <= random_search[-1])
        out[name] = {"median_final_regret": float(np.median(final)), "repeats": len(repeats),
                     "trials_to_match_random_search": int(hit[0]) + 1 if len(hit) else None}
    return out


def log_runs(tracker, optimizer: str, rows: list, summary: dict, params: Params) -> None:
    """One MLflow run per sampler: its median regret over the repeats as a step metric."""
    for name, s in summary.items():
        curve = [np.median([r["regret"] for r in rows if r["sampler"] == name and r["trials"] == t])
                 for t in range(1, params.study.n_trials + 1)]
        tracker.log_run("samplers", f"{optimizer} · {name} sampler", tags={"run_type": "sampler_comparison", "optimizer": optimizer,
                                                              "sampler": name},
                        params={"repeats": s["repeats"], "n_trials": params.study.n_trials,
                                "seeds_per_trial": params.study.seeds_per_trial},
                        metrics={k: v for k, v in s.items() if v is not None and k != "repeats"},
                        curves={"median_regret": (list(range(1, len(curve) + 1)), curve)})
