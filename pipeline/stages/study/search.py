"""What a trial computes: the sampler, the objective, and the study's name (the search space on
Optuna's side is core/space.py).

Everything here changes a trial's result, so the study's name carries a digest of the code the
study stage runs (this file, the engine, the optimizers and all else it imports, RESULT_CODE): a
change there starts a new study instead of mixing results. dvc.yaml lists the same files.
"""
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import NamedTuple, TypedDict

import numpy as np

from pipeline.core import engine, sourcecode, space
from pipeline.core.config import Params
from pipeline.core.data import Dataset

# Every file the study stage runs, from its own imports: part of the study name, so any change
# there starts a new study (a change that moves no number reruns the same trials to the same bits).
RESULT_CODE = sourcecode.imported_files(Path(__file__).with_name("__init__.py"))
EDGE_FRACTION = 0.02  # a best value this close to a range end (as a fraction of its width) is "at the edge"


def study_name(optimizer: str, params: Params, dataset: Dataset) -> str:
    """Problem, optimizer and schedule plus a digest of everything that changes the result (n_trials does not: raising
    it extends the same study; nor do workers and heartbeats)."""
    identity = {
        "problem": params.problem,
        "optimizer": optimizer,
        "schedule": params.schedule,
        "search_space": {h: dataclasses.asdict(params.study.search_space[h])
                         for h in space.searched(optimizer, params.schedule)},
        "train": dataclasses.asdict(params.train),
        "seeds_per_trial": params.study.seeds_per_trial,
        "sampler_seed": params.study.seed,
        "objective": params.study.objective,
        "data": hashlib.sha256(dataset.features.tobytes() + dataset.target.tobytes()).hexdigest(),
        "code": sourcecode.digest(RESULT_CODE),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{params.problem}-{optimizer}-{params.schedule}-{digest[:16]}"


# --- the sampler and the edges of the space ---------------------------------------------------

def sampler(seed: int, trial_number: int):
    """TPE seeded per trial number: reproducible, and workers sharing a study never draw the same
    random start-up points."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed * 1_000_003 + trial_number)


def edge_warnings(best: dict, search_space: dict) -> list:
    found = []
    for name, value in best.items():
        if search_space[name].low == search_space[name].high:  # fixed, not searched
            continue
        pos = space.position(value, search_space[name])
        if pos < EDGE_FRACTION or pos > 1 - EDGE_FRACTION:
            end = "low" if pos < 0.5 else "high"
            found.append(f"best {name} = {value:.6g} lies at the {end} edge of its range "
                         f"[{search_space[name].low}, {search_space[name].high}]: widen study.search_space.{name}")
    return found


# --- the objective --------------------------------------------------------------------------

class TrialRecord(TypedDict, total=False):
    """A trial's result as Optuna keeps it (user attribute "result"), all the MLflow run and
    trials.csv show; None stands for inf/NaN (JSON has neither)."""

    hyperparams: dict  # name -> value
    seeds: list
    seed_losses: list  # final loss per seed, None where it diverged
    examples: list  # examples seen at each record
    loss: list  # mean loss over the seeds at each record
    effective_lr: list  # mean effective lr over seeds and coordinates at each record
    wall_time_s: float  # added when the trial is told


class Evaluation(NamedTuple):
    value: float  # the objective; None when a seed diverged
    record: TrialRecord
    diverged_seeds: list


def _finite(values) -> list:
    return [float(v) if np.isfinite(v) else None for v in values]


def evaluate_trial(hyper: dict, optimizer: str, params: Params, dataset: Dataset) -> Evaluation:
    """Train the trial's seeds in one engine call and score them."""
    seeds = np.arange(params.study.seeds_per_trial)
    result = engine.train(dataset, optimizer, hyper, seeds, params.train, params.problem, params.schedule)
    diverged = seeds[result.diverged].tolist()
    value = None if diverged else float(np.mean(result.score(params.study.objective)))
    with np.errstate(invalid="ignore"):
        losses, eff_lr = result.losses.mean(axis=0), np.nanmean(result.effective_lr, axis=(0, 2))
    record = TrialRecord(
        hyperparams=hyper, seeds=seeds.tolist(),
        seed_losses=[None if d else float(v) for d, v in zip(result.diverged, result.final_loss)],
        examples=result.examples.tolist(), loss=_finite(losses), effective_lr=_finite(eff_lr),
    )
    return Evaluation(value, record, diverged)
