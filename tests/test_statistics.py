"""Every statistic the comparisons report, against an independent computation: enumeration,
the exact null distribution, scipy, or a landscape whose answer is known."""
import itertools

import numpy as np
import pytest
from scipy import stats

from pipeline.core import statistics as st
from pipeline.stages.evaluate import comparisons, samplers


def test_expected_best_of_random_search_is_the_mean_over_every_draw():
    """b draws with replacement from a small grid, one point diverged: enumerate all N^b draws."""
    values = np.array([0.31, 0.25, np.inf, 0.27, 0.26])
    got = st.expected_best_with_replacement(values, [1, 2, 3, 4])
    for b, expected in zip([1, 2, 3, 4], got):
        minima = [min(draw) for draw in itertools.product(values, repeat=b)]
        finite = [m for m in minima if np.isfinite(m)]
        assert expected == pytest.approx(np.mean(finite), rel=1e-12)


def test_wilcoxon_p_against_the_exact_null_distribution():
    """The two-sided p-value of the signed-rank statistic, by enumerating all 2^n sign flips."""
    d = np.array([0.9, -0.3, 1.7, 0.4, 2.2, -0.8, 1.1, 0.6, 1.4])
    ranks = stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    mean = ranks.sum() / 2
    flips = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))]
    exact = np.mean([abs(w - mean) >= abs(observed - mean) - 1e-12 for w in flips])
    assert st.wilcoxon_p(d) == pytest.approx(exact, rel=1e-9)
    assert st.wilcoxon_p(np.zeros(5)) == 1.0


def test_holm_against_its_definition():
    """adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)), in the input's order."""
    rng = np.random.default_rng(3)
    for p in ([0.01, 0.04, 0.03, 0.005], rng.uniform(0, 0.2, 7).tolist(), [0.5, 0.6]):
        order = np.argsort(p, kind="stable")
        m = len(p)
        by_rank = [max(min(1.0, (m - j) * p[order[j]]) for j in range(i + 1)) for i in range(m)]
        expected = np.empty(m)
        expected[order] = by_rank
        np.testing.assert_allclose(st.holm(p), expected)
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_bootstrap_interval_agrees_with_the_t_interval_on_a_large_normal_sample():
    x = np.random.default_rng(0).normal(1.0, 2.0, 400)
    low, high = st.bootstrap_ci(x, np.random.default_rng(1))
    t_low, t_high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert low == pytest.approx(t_low, abs=0.05 * (t_high - t_low)) and high == pytest.approx(t_high, abs=0.05 * (t_high - t_low))
    assert st.bootstrap_ci(np.full(5, 0.3), np.random.default_rng(1)) == pytest.approx((0.3, 0.3))


def test_paired_uses_only_seeds_where_neither_diverged():
    a = np.array([0.25, 0.26, np.nan, 0.24, 0.27])
    b = np.array([0.26, 0.28, 0.25, np.nan, 0.29])
    t = st.paired(a, b, np.random.default_rng(0))
    assert t["seeds"] == 3 and t["mean_diff"] == pytest.approx(np.mean([-0.01, -0.02, -0.02]))
    assert t["p"] == pytest.approx(stats.wilcoxon([-0.01, -0.02, -0.02]).pvalue)


def test_probability_best_by_bootstrap():
    rng = np.random.default_rng(0)
    finals = np.column_stack([rng.normal(0.25, 0.001, 10), rng.normal(0.26, 0.001, 10), np.full(10, np.nan)])
    assert st.probability_best(finals, np.random.default_rng(1)) == [1.0, 0.0, 0.0]
    tied = np.column_stack([np.arange(10.0), np.arange(10.0)[::-1]])
    p = st.probability_best(tied, np.random.default_rng(1))
    assert sum(p) == pytest.approx(1.0) and 0.4 < p[0] < 0.6  # symmetric: each wins about half


def test_tunability_on_a_landscape_with_a_known_answer():
    """100 grid points, one at the optimum (excess 1), the rest at excess 2: random search comes
    within 5% only by drawing the optimum, so E[min of b] = 2 - (1 - 0.99^b) <= 1.05 first at
    b = ceil(log(0.05) / log(0.99)) = 299 (and within 1% at 459)."""
    values = np.r_[1.0, np.full(99, 2.0)]
    curve = st.expected_best_with_replacement(values, np.arange(1, 501))
    np.testing.assert_allclose(curve, 2 - (1 - 0.99 ** np.arange(1, 501)))
    assert st.tunability(curve, optimum=1.0, floor=0.0) == {"0.01": 459, "0.05": 299}
    assert st.tunability(curve[:200], optimum=1.0, floor=0.0) == {"0.01": None, "0.05": None}


def test_half_resolution_grid_takes_every_other_point_per_axis():
    cube = np.arange(4 * 4 * 4, dtype=float)
    np.testing.assert_array_equal(comparisons.subgrid(cube, 4, 3), cube.reshape(4, 4, 4)[::2, ::2, ::2].ravel())


def test_sampler_repeats_are_reproducible_from_their_seeds(params, dataset):
    import dataclasses
    p = dataclasses.replace(params, study=dataclasses.replace(params.study, n_trials=6, seeds_per_trial=1,
                                                              optimizers=["rmsprop"]),
                            evaluate=dataclasses.replace(params.evaluate, sampler_repeats=2))
    first = samplers.compare(dataset, "rmsprop", p, optimum=0.2417)
    assert first == samplers.compare(dataset, "rmsprop", p, optimum=0.2417)
    assert {(r["sampler"], r["repeat"]) for r in first} == {(s, k) for s in samplers.SAMPLERS for k in range(2)}
    tpe = [r["best_so_far"] for r in first if r["sampler"] == "tpe" and r["repeat"] == 0]
    assert len(tpe) == 6 and all(np.diff(tpe) <= 0)  # best so far never rises
    other_seed = dataclasses.replace(p, study=dataclasses.replace(p.study, seed=1))
    assert samplers.compare(dataset, "rmsprop", other_seed, optimum=0.2417) != first
