"""A search space on Optuna's side: how each hyperparameter's range is sampled and named.

Shared by the study and the evaluation's sampler comparison, so both search the same space the
same way. Its code is part of the study's name (stages/study/search.py).
"""
import math

from pipeline.core import optimizers, schedules
from pipeline.core.config import Range


def optuna_name(name: str, r: Range) -> str:
    """What Optuna calls a hyperparameter: log1m ranges are sampled as 1 - value."""
    return f"one_minus_{name}" if r.scale == "log1m" else name


def suggest(trial, name: str, r: Range) -> float:
    if r.scale == "log1m":  # sample 1 - value log-uniformly: fair coverage of memory lengths
        return 1.0 - trial.suggest_float(optuna_name(name, r), 1.0 - r.high, 1.0 - r.low, log=True)
    return trial.suggest_float(name, r.low, r.high, log=r.scale == "log")


def searched(optimizer: str, schedule: str = "constant") -> tuple:
    """What a study searches: the optimizer's hyperparameters, then its schedule's settings."""
    return optimizers.get(optimizer).hyperparams + schedules.get(schedule).run_settings


def suggest_all(trial, optimizer: str, space: dict, schedule: str = "constant") -> dict:
    return {h: suggest(trial, h, space[h]) for h in searched(optimizer, schedule)}


def sampled_hyperparams(trial, optimizer: str, space: dict, schedule: str = "constant") -> dict:
    """The hyperparameters a trial was given, from Optuna's own record (also for trials that
    were interrupted before they produced a result)."""
    found = {}
    for h in searched(optimizer, schedule):
        key = optuna_name(h, space[h])
        if key in trial.params:
            found[h] = 1.0 - trial.params[key] if key != h else trial.params[key]
    return found


def position(value: float, r: Range) -> float:
    """Where value lies in its range, 0..1, on the scale it is sampled on."""
    f = {"linear": lambda v: v, "log": math.log, "log1m": lambda v: -math.log(1.0 - v)}[r.scale]
    return (f(value) - f(r.low)) / (f(r.high) - f(r.low))
