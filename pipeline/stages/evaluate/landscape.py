"""The landscape: each study's objective on a full grid over its search space, evenly spaced on
each hyperparameter's sampling scale and trained on the study's own seeds. Its minimum is the
ground truth for regret; its values stand for the distribution random search draws from.
"""
import math

import numpy as np
from scipy import special

from pipeline.core import engine, optimizers
from pipeline.core.config import Params, Range


def grid(r: Range, n: int) -> np.ndarray:
    """n points spanning a search range on the scale it is sampled on."""
    if r.scale == "log":
        return np.geomspace(r.low, r.high, n)
    if r.scale == "log1m":
        return 1.0 - np.geomspace(1.0 - r.low, 1.0 - r.high, n)
    return np.linspace(r.low, r.high, n)


def grid_side(dimensions: int, ev) -> int:
    """Points per axis of the landscape grid for a search space of that many hyperparameters."""
    return {1: ev.lr_points, 2: ev.grid_points}.get(dimensions, ev.cube_points)


def landscape_grid(optimizer: str, params: Params) -> tuple:
    """The study's search space as a full grid, evenly spaced on each hyperparameter's sampling
    scale, each point repeated over the study's seeds:
    (points {hyperparameter: (k,)}, hyper {hyperparameter: (k * s,)}, seeds (k * s,))."""
    space = params.study.search_space
    names = optimizers.get(optimizer).hyperparams
    side = grid_side(len(names), params.evaluate)
    axes = np.meshgrid(*[grid(space[h], side) for h in names], indexing="ij")
    points = {h: a.reshape(-1) for h, a in zip(names, axes)}
    seeds = np.arange(params.study.seeds_per_trial)
    k = side ** len(names)
    return points, {h: np.repeat(v, len(seeds)) for h, v in points.items()}, np.tile(seeds, k)


def landscape(optimizer: str, points: dict, result: engine.TrainResult, params: Params) -> list:
    """The study's objective at each grid point, from the runs of landscape_grid: its minimum is
    ground truth for the study."""
    k = len(next(iter(points.values())))
    value = result.scored(params.study.objective).reshape(k, -1).mean(axis=1)  # a diverged seed: its initial loss
    diverged = result.diverged.reshape(k, -1).any(axis=1)
    return [{"optimizer": optimizer, **{h: v[i] for h, v in points.items()}, "objective": value[i],
             "diverged": int(diverged[i])} for i in range(k)]


def expected_best_without_replacement(values: np.ndarray, budgets) -> np.ndarray:
    """Expected minimum of b values drawn without replacement from `values`, for each b, among
    the finite ones. P(the minimum is the i-th smallest) = C(n - i, b - 1) / C(n, b), computed in
    log space: exact binomials overflow floats past n = 1029."""
    ordered = np.sort(values)
    n = len(ordered)
    finite = np.isfinite(ordered)
    i = np.arange(1, n + 1)
    out = []
    for b in budgets:
        log_w = _log_comb(n - i, b - 1) - _log_comb(n, b)
        w = np.exp(log_w - log_w[finite].max()) * finite if finite.any() else None
        out.append(float(w[finite] @ ordered[finite] / w[finite].sum()) if finite.any() else math.inf)
    return np.array(out)


def _log_comb(n, k):
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        value = special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
    return np.where(n >= k, value, -np.inf)


def budget_curve(values: np.ndarray, optimum: float) -> list:
    """Best-so-far by trial number (what TPE did) and the expected best of b of the study's own
    trials drawn without replacement (Tang et al.'s unbiased estimator; not random search, since
    TPE's trials are not a random sample of the space). values: the trials' objective, penalized."""
    budgets = np.arange(1, len(values) + 1)
    expected = expected_best_without_replacement(values, budgets)
    best_so_far = np.minimum.accumulate(values)
    return [{"trials": int(b), "best_so_far": float(best_so_far[b - 1]), "subsample_expected_best": float(expected[b - 1]),
             "regret": float(best_so_far[b - 1] - optimum)} for b in budgets]
