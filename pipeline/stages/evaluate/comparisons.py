"""The evaluation's comparisons: paired tests between optimizers on common random numbers, tuned
against the book's and the framework's default settings, and tunability from the landscape.

Every number lands in reports/summary.json under stable keys (see evaluate's docstring).
"""
from itertools import combinations

import numpy as np

from pipeline.core import statistics as st

FAMILIES_AGAINST_TUNED = ("book", "defaults")  # was tuning worth it, against the book and against Keras's defaults


def _with_holm(tests: dict) -> dict:
    keys = [k for k, t in tests.items() if t["p"] is not None]
    for k, adjusted in zip(keys, st.holm([tests[k]["p"] for k in keys])):
        tests[k]["p_holm"] = adjusted
    return tests


def paired_comparisons(finals: dict, rng: np.random.Generator) -> dict:
    """finals: optimizer -> family -> (seeds,) final losses (NaN = diverged), on the same seeds.
    Every pair of tuned optimizers (a - b: negative means a is better), tuned - book and tuned -
    defaults per optimizer, each family of tests Holm-corrected, and P(best) among the tuned."""
    names = list(finals)
    out = {"pairs": _with_holm({f"{a}_vs_{b}": st.paired(finals[a]["tuned"], finals[b]["tuned"], rng)
                                for a, b in combinations(names, 2)})}
    for family in FAMILIES_AGAINST_TUNED:
        out[f"tuned_vs_{family}"] = _with_holm({o: st.paired(finals[o]["tuned"], finals[o][family], rng)
                                               for o in names})
    matrix = np.column_stack([finals[o]["tuned"] for o in names])
    out["probability_best"] = dict(zip(names, st.probability_best(matrix, rng)))
    return out


def subgrid(values: np.ndarray, side: int, dims: int) -> np.ndarray:
    """Every other point along each axis of a full grid stored in C order."""
    cube = values.reshape((side,) * dims)
    return cube[(slice(None, None, 2),) * dims].reshape(-1)


def random_search(values: np.ndarray, side: int, dims: int, n_trials: int, optimum: float, floor: float) -> tuple:
    """The expected best of b random-search trials (b = 1..n_trials) from the grid, which stands
    for the distribution random search draws from; alpha-tunability; and how far the same curve
    from the half-resolution grid lies (a measure of the grid's discretisation error)."""
    budgets = np.arange(1, n_trials + 1)
    curve = st.expected_best_with_replacement(values, budgets)
    coarse = st.expected_best_with_replacement(subgrid(values, side, dims), budgets)
    resolution = float(abs(curve[-1] - coarse[-1])) if np.isfinite(curve[-1]) else None
    return curve, {"expected_best_at_budget": float(curve[-1]), "budget_to_within": st.tunability(curve, optimum, floor),
                   "half_grid_difference_at_budget": resolution}
