"""What the evaluation measures on a problem's runs: mean and interval under the divergence rule, when
a run reaches the floor or the profile's target, and how far each layer's effective lr fell."""
import math
from typing import Optional, TypedDict

import numpy as np
from scipy import stats

from pipeline.core import engine, statistics


class FinalLoss(TypedDict):
    mean: float  # over every seed, a diverged one scoring its initial loss
    ci95: Optional[float]  # t-interval half-width
    diverged_seeds: int
    seeds: int


def target(problem, floor: float, tolerance: float, tuned_finals: dict) -> dict:
    """The loss the performance profile asks each run to reach. A closed-form floor: within `tolerance`
    of it. A best known loss is one run's luck, far below what tuned runs reach in the budget (the
    network still improves at its end, by design), so, as AlgoPerf sets its targets from tuned
    baselines: the median final loss of the tuned optimizer whose median is lowest."""
    if problem.floor != "best_known":
        return {"value": (1 + tolerance) * floor, "rule": f"within {tolerance:.0%} of the {problem.floor_words} floor"}
    best = min(tuned_finals, key=lambda o: np.median(tuned_finals[o]))
    return {"value": float(np.median(tuned_finals[best])),
            "rule": f"the median final loss of the best tuned optimizer ({best}), as AlgoPerf sets targets"}


def examples_to_target(result: engine.TrainResult, value: float) -> list:
    """Per run, the examples seen when the loss first came down to `value` (None: never)."""
    reached = result.losses <= value
    return [int(result.examples[np.argmax(r)]) if r.any() else None for r in reached]


def examples_to_floor(result: engine.TrainResult, floor: float, tolerance: float) -> list:
    """Per run, the examples seen when the loss first came within `tolerance` of the floor (None: never)."""
    return examples_to_target(result, (1 + tolerance) * floor)


def mean_ci(values: np.ndarray, penalty) -> FinalLoss:
    """Mean and 95% t-interval half-width over every seed under the divergence rule (a diverged
    seed scores `penalty`, its initial loss), and how many diverged."""
    values = np.asarray(values, dtype=np.float64)
    scored = statistics.penalized(values, penalty)
    n = len(scored)
    half = float(stats.t.ppf(0.975, n - 1) * scored.std(ddof=1) / math.sqrt(n)) if n >= 2 else None
    return FinalLoss(mean=float(scored.mean()), ci95=half, diverged_seeds=int((~np.isfinite(values)).sum()),
                     seeds=int(n))


def lr_ratio(result: engine.TrainResult, layers: dict) -> dict:
    """Per layer (a linear model is one), the median coordinate's effective lr at the last record over
    its value at the first, averaged over the seeds that did not diverge: below 1 the rate fell.
    layers: the workload's rate_layers, layer -> its median column (None: the median over all)."""
    kept = ~result.diverged
    if not kept.any():
        return {}
    eff = result.effective_lr[kept]  # (seeds, R, C)
    medians = {layer: np.median(eff, axis=2) if j is None else eff[:, :, j] for layer, j in layers.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        return {layer: float(np.mean(v[:, -1] / v[:, 0])) for layer, v in medians.items()}
