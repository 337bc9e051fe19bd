"""The statistics the comparisons report, as plain functions of arrays.

Paired tests use common random numbers: every optimizer's evaluation runs on the same seeds (same
initial weights, same shuffles), so differences are taken seed by seed. Bootstrap resamples are
drawn from a generator the caller seeds, so every number is reproducible. Wilcoxon's test is
scipy's; Holm's step-down correction is four lines, written here because scipy has none.
"""
import numpy as np
from scipy import stats

BOOTSTRAP = 10_000  # resamples for every bootstrap interval and probability


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, level: float = 0.95) -> tuple:
    """Percentile bootstrap interval of the mean."""
    values = np.asarray(values, dtype=np.float64)
    means = values[rng.integers(0, len(values), (BOOTSTRAP, len(values)))].mean(axis=1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (1.0 when all are zero)."""
    differences = np.asarray(differences, dtype=np.float64)
    if not np.any(differences):
        return 1.0
    return float(stats.wilcoxon(differences).pvalue)


def holm(pvalues) -> list:
    """Holm's step-down adjusted p-values, in the order given."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]).clip(max=1.0)
    out = np.empty_like(p)
    out[order] = adjusted
    return out.tolist()


def paired(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> dict:
    """a - b seed by seed, over the seeds where neither diverged (NaN)."""
    keep = np.isfinite(a) & np.isfinite(b)
    d = np.asarray(a)[keep] - np.asarray(b)[keep]
    if len(d) < 2:
        return {"mean_diff": None, "ci95": None, "p": None, "seeds": int(len(d))}
    return {"mean_diff": float(d.mean()), "ci95": list(bootstrap_ci(d, rng)), "p": wilcoxon_p(d), "seeds": int(len(d))}


def probability_best(finals: np.ndarray, rng: np.random.Generator) -> list:
    """finals (seeds, optimizers): how often each optimizer has the lowest mean over a bootstrap
    resample of the seeds (a diverged seed, NaN, counts as worse than any finite loss)."""
    finals = np.where(np.isfinite(finals), finals, np.inf)
    rows = rng.integers(0, len(finals), (BOOTSTRAP, len(finals)))
    winners = np.argmin(finals[rows].mean(axis=1), axis=1)
    return (np.bincount(winners, minlength=finals.shape[1]) / BOOTSTRAP).tolist()


def expected_best_with_replacement(values: np.ndarray, budgets) -> np.ndarray:
    """Expected minimum of b independent draws from `values` (random search on a grid that stands
    for its distribution); a diverged point (inf or NaN) is worse than any other. With the values
    sorted, P(min = v_(i)) = ((N - i + 1)^b - (N - i)^b) / N^b; inf where every draw may diverge
    and did with certainty."""
    v = np.sort(np.where(np.isfinite(values), values, np.inf))
    n = len(v)
    survive = (n - np.arange(n + 1)) / n  # P(one draw is not among the i smallest), i = 0..n
    finite = np.isfinite(v)
    out = []
    for b in budgets:
        weights = survive[:-1] ** b - survive[1:] ** b  # P(min is the i-th smallest)
        out.append(float(weights[finite] @ v[finite] / weights[finite].sum()) if finite.any() else np.inf)
    return np.array(out)


def budget_to_reach(curve: np.ndarray, target: float):
    """The first budget (1-based) at which a non-increasing curve is at or below target, or None."""
    hit = np.flatnonzero(np.asarray(curve) <= target)
    return int(hit[0]) + 1 if len(hit) else None


def tunability(curve: np.ndarray, optimum: float, floor: float, alphas=(0.01, 0.05)) -> dict:
    """alpha -> the budget at which the expected best comes within (1 + alpha) of the optimum's
    excess loss over the floor (None: not within the curve's budgets)."""
    return {f"{a:g}": budget_to_reach(curve, floor + (1 + a) * (optimum - floor)) for a in alphas}
