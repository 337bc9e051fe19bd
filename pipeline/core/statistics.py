"""The statistics the comparisons report, as plain functions of arrays.

One rule for divergence everywhere: a diverged run scores a stated finite penalty (the loss at the
start of training, see `penalized`), so every mean, resample, test and curve counts it as the bad
run it was instead of dropping it or turning the summary into inf.

Paired comparisons use common random numbers (every optimizer runs on the same seeds) and one
estimand: the Hodges-Lehmann estimate of the paired difference (the median of the Walsh averages),
with its exact confidence interval, tested by the exact Wilcoxon signed-rank test (scipy's), whose
inversion that interval is. No resampling, so no shared RNG stream: P(best) alone resamples, from
a stream derived from the names it compares. Holm's step-down correction is written here because
scipy has none.
"""
import hashlib

import numpy as np
from scipy import stats

BOOTSTRAP = 10_000  # resamples for P(best) and the random-search interval
ALPHA = 0.05  # the level a Holm-adjusted p-value is called significant at; intervals are 1 - ALPHA


def penalized(values, penalty) -> np.ndarray:
    """The divergence rule: inf or NaN (a diverged run) scores `penalty` (one per value, or one for all)."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values, np.broadcast_to(np.asarray(penalty, np.float64), values.shape))


def rng_for(seed: int, *names: str) -> np.random.Generator:
    """A generator of its own for one statistic, derived from its names: adding a comparison
    never changes another's numbers."""
    digest = hashlib.sha256("\0".join(map(str, names)).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value (scipy; exact without ties up to 50 pairs; zero
    differences dropped), 1.0 when every difference is zero."""
    differences = np.asarray(differences, dtype=np.float64)
    if not np.any(differences):
        return 1.0
    return float(stats.wilcoxon(differences).pvalue)


def smallest_p(n: int) -> float:
    """The smallest two-sided exact signed-rank p-value n non-zero pairs can give: every sign agreeing."""
    return min(1.0, 2.0 / 2 ** n) if n else 1.0


def signed_rank_counts(n: int) -> np.ndarray:
    """How many of the 2^n sign patterns give each value 0..n(n+1)/2 of the signed-rank statistic."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return counts


def hodges_lehmann(differences) -> tuple:
    """(estimate, (low, high), achieved level): the median of the Walsh averages (d_i + d_j) / 2,
    i <= j, and the exact distribution-free interval [W_(k), W_(M + 1 - k)], k the largest with
    P(T+ <= k - 1) <= ALPHA / 2 under the signed-rank null (Hollander and Wolfe). It is the set of
    shifts the exact two-sided Wilcoxon test does not reject. With too few pairs for a 95% interval
    (n < 6) it is the widest one, at the level it achieves."""
    d = np.asarray(differences, dtype=np.float64)
    n = len(d)
    i, j = np.triu_indices(n)
    walsh = np.sort((d[i] + d[j]) / 2)
    cdf = np.cumsum(signed_rank_counts(n)) / 2.0 ** n
    k = max(1, int(np.searchsorted(cdf, ALPHA / 2, side="right")))  # P(T+ <= k - 1) <= ALPHA / 2
    level = 1.0 - 2.0 * cdf[k - 1]
    return float(np.median(walsh)), (float(walsh[k - 1]), float(walsh[len(walsh) - k])), float(level)


def holm(pvalues) -> list:
    """Holm's step-down adjusted p-values, in the order given."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]).clip(max=1.0)
    out = np.empty_like(p)
    out[order] = adjusted
    return out.tolist()


def paired(a, b) -> dict:
    """a - b seed by seed (already penalized: every seed counts): the Hodges-Lehmann estimate,
    its exact interval, the Wilcoxon p-value, and what the seeds allow."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    estimate, (low, high), level = hodges_lehmann(d)
    nonzero = int(np.count_nonzero(d))
    return {"estimate": estimate, "ci": [low, high], "ci_level": level, "p": wilcoxon_p(d), "seeds": int(len(d)),
            "nonzero_pairs": nonzero, "smallest_p": smallest_p(nonzero)}


def verdict(test: dict, margin: float) -> str:
    """better / worse (a - b significant after Holm, by sign), equivalent (not significant and its
    interval inside +-margin), or inconclusive."""
    if test["p_holm"] < ALPHA and test["estimate"] != 0:
        return "better" if test["estimate"] < 0 else "worse"
    low, high = test["ci"]
    return "equivalent" if -margin <= low and high <= margin else "inconclusive"


def flipped(test: dict) -> dict:
    """The test of b - a from the test of a - b: estimate and interval negated, verdict swapped."""
    swap = {"better": "worse", "worse": "better"}
    return {**test, "estimate": -test["estimate"], "ci": [-test["ci"][1], -test["ci"][0]],
            "verdict": swap.get(test["verdict"], test["verdict"])}


def probability_best(scores: np.ndarray, rng: np.random.Generator) -> list:
    """scores (seeds, optimizers), penalized: how often each optimizer has the lowest mean over a
    bootstrap resample of the seeds. Ties share the win equally, never given to the first column."""
    scores = np.asarray(scores, dtype=np.float64)
    rows = rng.integers(0, len(scores), (BOOTSTRAP, len(scores)))
    means = scores[rows].mean(axis=1)
    winners = np.isclose(means, means.min(axis=1, keepdims=True), rtol=1e-12, atol=0)
    return (winners / winners.sum(axis=1, keepdims=True)).mean(axis=0).tolist()


def random_search_weights(n: int, budgets) -> np.ndarray:
    """(B, n): P(the minimum of b independent draws from n sorted values is the i-th smallest),
    ((n - i + 1)^b - (n - i)^b) / n^b. The same for any values, so one matrix serves many."""
    survive = (n - np.arange(n + 1)) / n  # P(one draw is not among the i smallest), i = 0..n
    return np.array([survive[:-1] ** b - survive[1:] ** b for b in budgets])


def expected_best_with_replacement(values: np.ndarray, budgets) -> np.ndarray:
    """Expected minimum of b independent draws from `values` (penalized: all finite), for each b."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    return random_search_weights(len(v), budgets) @ v


def budget_to_reach(curve: np.ndarray, target: float):
    """The first budget (1-based) at which a non-increasing curve is at or below target, or None."""
    hit = np.flatnonzero(np.asarray(curve) <= target)
    return int(hit[0]) + 1 if len(hit) else None


def tunability(curve: np.ndarray, optimum: float, floor: float, alphas=(0.01, 0.05)) -> dict:
    """alpha -> the budget at which the expected best comes within (1 + alpha) of the optimum's
    excess loss over the floor (None: not within the curve's budgets)."""
    return {f"{a:g}": budget_to_reach(curve, floor + (1 + a) * (optimum - floor)) for a in alphas}


def normalized_area(curve: np.ndarray, optimum: float, start: float) -> float:
    """A tunability score without a threshold (after Sivaprasad et al.): the mean over budgets
    1..B of the expected best's remaining gap, (curve - optimum) / (start - optimum), where start is
    the penalty a diverged run scores. 0: the first draw is already optimal; 1: nothing better than
    a diverged run is ever expected."""
    gap = (np.asarray(curve, dtype=np.float64) - optimum) / (start - optimum)
    return float(np.clip(gap, 0.0, None).mean())
