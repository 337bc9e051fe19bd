"""The evaluation's comparisons: paired tests between optimizers on common random numbers, tuned
against the book's and the framework's default settings, and tunability from random search.

Every score here is already penalized (statistics.penalized: a diverged run scores the loss at
the start of training), so every seed counts in every comparison. Every number lands in
reports/summary.json under stable keys (see evaluate's docstring).
"""
from itertools import combinations

import numpy as np

from pipeline.core import statistics as st

RANDOM_SEARCH_RESAMPLES = 200  # bootstrap curves over the draws: each is one sort and one matrix product
FAMILIES_AGAINST_TUNED = ("book", "defaults")  # was tuning worth it, against the book and against Keras's defaults


def holm_family(name: str, tests: dict, margin: float) -> dict:
    """Holm across one family of tests; each test then knows its family, its verdict and the margin."""
    for key, adjusted in zip(tests, st.holm([t["p"] for t in tests.values()])):
        tests[key].update(p_holm=adjusted, family=name, family_size=len(tests))
        tests[key]["verdict"] = st.verdict(tests[key], margin)
    return tests


def paired_comparisons(scores: dict, margin: float, seed: int) -> dict:
    """scores: optimizer -> family -> (seeds,) penalized final losses, on the same seeds. Every pair
    of tuned optimizers (a - b: negative means a is better), tuned - book and tuned - defaults per
    optimizer, each family Holm-corrected, and P(best) among the tuned."""
    names = list(scores)
    out = {"pairs": holm_family("pairs of tuned optimizers", {f"{a}_vs_{b}": st.paired(scores[a]["tuned"], scores[b]["tuned"])
                                                          for a, b in combinations(names, 2)}, margin)}
    for family in FAMILIES_AGAINST_TUNED:
        out[f"tuned_vs_{family}"] = holm_family(f"tuned vs {family}", {o: st.paired(scores[o]["tuned"], scores[o][family])
                                                                    for o in names}, margin)
    matrix = np.column_stack([scores[o]["tuned"] for o in names])
    out["probability_best"] = dict(zip(names, st.probability_best(matrix, st.rng_for(seed, "probability_best", *names))))
    return out


def random_search(draws: np.ndarray, n_trials: int, optimum: float, floor: float, start: float, seed: int,
                  name: str) -> tuple:
    """The expected best of b random-search trials, b = 1..n_trials, from `draws`: the objective
    (penalized) at points drawn from the search space's own distribution, so the curve estimates
    the real search's, whatever the landscape grid's resolution. The 95% interval at the full
    budget comes from a bootstrap over the draws (RANDOM_SEARCH_RESAMPLES). Tunability: the budgets to come within 1% and 5%
    of the best known value's excess loss, and the normalized area under the curve."""
    budgets = np.arange(1, n_trials + 1)
    weights = st.random_search_weights(len(draws), budgets)
    curve = weights @ np.sort(draws)
    rng = st.rng_for(seed, "random_search", name)
    boot = np.sort(draws[rng.integers(0, len(draws), (RANDOM_SEARCH_RESAMPLES, len(draws)))], axis=1) @ weights.T
    within = [st.tunability(c, optimum, floor) for c in boot]
    areas = [st.normalized_area(c, optimum, start) for c in boot]
    return curve, {
        "draws": int(len(draws)),
        "expected_best_at_budget": float(curve[-1]),
        "expected_best_ci": _interval(boot[:, -1]),
        "budget_to_within": st.tunability(curve, optimum, floor),
        "budget_to_within_ci": {a: _interval([w[a] or np.inf for w in within]) for a in within[0]},
        "normalized_area": st.normalized_area(curve, optimum, start),
        "normalized_area_ci": _interval(areas),
    }


def _interval(values) -> list:
    """The 95% bootstrap percentile interval; an infinite end (a budget never reached) is None."""
    with np.errstate(invalid="ignore"):  # between two never-reached budgets (inf, inf) NumPy's lerp makes NaN
        low, high = np.quantile(np.asarray(values, dtype=np.float64), [0.025, 0.975])
    return [float(v) if np.isfinite(v) else None for v in (low, high)]
