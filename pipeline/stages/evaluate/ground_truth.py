"""What regret and tunability are measured against, and what random search would draw.

The best known value of a study's objective is the lowest found anywhere: the landscape grid, every
study trial, every sampler trial, and a finer grid around the best of the grid and the study
(`evaluate.refine_points` per axis, spanning one landscape step either side), so no sampler can
beat it by landing between grid nodes: regret is never negative. Random search is estimated from
`evaluate.random_draws` points drawn from the search space's own distribution (uniform on each
hyperparameter's sampling scale, seeded), not from the grid, so its curve does not move with the
grid's resolution. Every value follows the one divergence rule (statistics.penalized).
"""
import math

import numpy as np

from pipeline.core import engine, optimizers, space
from pipeline.core.config import Params, Range
from pipeline.core.statistics import rng_for
from pipeline.stages.evaluate import landscape


def from_unit(u: np.ndarray, r: Range) -> np.ndarray:
    """Points at positions u in [0, 1] of a range, on the scale it is sampled on."""
    u = np.asarray(u, dtype=np.float64)
    if r.scale == "log":
        return np.exp(math.log(r.low) + u * (math.log(r.high) - math.log(r.low)))
    if r.scale == "log1m":
        return 1.0 - np.exp(math.log(1.0 - r.low) + u * (math.log(1.0 - r.high) - math.log(1.0 - r.low)))
    return r.low + u * (r.high - r.low)


def uniform_draws(optimizer: str, params: Params) -> dict:
    """evaluate.random_draws points, each hyperparameter uniform on its sampling scale."""
    names, ranges = optimizers.get(optimizer).hyperparams, params.study.search_space
    u = rng_for(params.study.seed, "random_draws", optimizer).random((params.evaluate.random_draws, len(names)))
    return {h: from_unit(u[:, i], ranges[h]) for i, h in enumerate(names)}


def refinement(optimizer: str, center: dict, params: Params) -> dict:
    """A finer grid around `center`: refine_points per axis over one landscape step either side."""
    names, ranges = optimizers.get(optimizer).hyperparams, params.study.search_space
    step = 1.0 / (landscape.grid_side(len(names), params.evaluate) - 1)
    axes = [np.clip(space.position(center[h], ranges[h]) + np.linspace(-step, step, params.evaluate.refine_points), 0, 1)
            for h in names]
    mesh = np.meshgrid(*axes, indexing="ij")
    return {h: from_unit(m.reshape(-1), ranges[h]) for h, m in zip(names, mesh)}


def with_seeds(points: dict, params: Params) -> tuple:
    """(hyper, seeds) for the engine: every point on the study's seeds."""
    seeds = np.arange(params.study.seeds_per_trial)
    k = len(next(iter(points.values())))
    return {h: np.repeat(v, len(seeds)) for h, v in points.items()}, np.tile(seeds, k)


def objective(result: engine.TrainResult, params: Params) -> np.ndarray:
    """The study's objective at each point of a with_seeds() run, penalized: (points,)."""
    return result.scored(params.study.objective).reshape(-1, params.study.seeds_per_trial).mean(axis=1)


def best_known(candidates: list) -> dict:
    """The lowest of (value, hyperparams, source) candidates."""
    value, hyper, source = min(candidates, key=lambda c: c[0])
    return {"value": float(value), "hyperparams": {h: float(v) for h, v in hyper.items()}, "source": source}
