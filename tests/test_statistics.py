"""Every statistic the comparisons report, against an independent computation: enumeration,
the exact null distribution, scipy, or a landscape whose answer is known."""
import itertools

import numpy as np
import pytest
from scipy import stats

from pipeline.core import statistics as st
from pipeline.stages.evaluate import comparisons, samplers


def test_expected_best_of_random_search_is_the_mean_over_every_draw():
    """b draws with replacement from a small set, one diverged point scoring its penalty (0.5):
    enumerate all N^b draws."""
    values = st.penalized(np.array([0.31, 0.25, np.inf, 0.27, 0.26]), 0.5)
    got = st.expected_best_with_replacement(values, [1, 2, 3, 4])
    for b, expected in zip([1, 2, 3, 4], got):
        assert expected == pytest.approx(np.mean([min(draw) for draw in itertools.product(values, repeat=b)]), rel=1e-12)


def test_the_divergence_rule_scores_the_penalty_and_keeps_finite_values():
    got = st.penalized([0.2, np.nan, np.inf, 0.3], [0.5, 0.6, 0.7, 0.8])
    np.testing.assert_array_equal(got, [0.2, 0.6, 0.7, 0.3])


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


def test_signed_rank_null_counts_and_smallest_p_by_enumeration():
    for n in range(1, 9):
        sums = [sum(r for r, s in zip(range(1, n + 1), signs) if s) for signs in itertools.product([0, 1], repeat=n)]
        np.testing.assert_array_equal(st.signed_rank_counts(n), np.bincount(sums, minlength=n * (n + 1) // 2 + 1))
        d = np.arange(1.0, n + 1)  # every sign agreeing: the most extreme sample n pairs can give
        assert st.smallest_p(n) == pytest.approx(stats.wilcoxon(d, method="exact").pvalue, rel=1e-12)


@pytest.mark.parametrize("n", [6, 10, 20])
def test_hodges_lehmann_interval_is_the_inverted_exact_wilcoxon_test(n):
    """The estimate is the median of all Walsh averages (brute force); the interval's ends are where
    scipy's exact two-sided test on d - shift starts to reject at 5%."""
    d = np.random.default_rng(n).normal(0.3, 1.0, n)
    estimate, (low, high), level = st.hodges_lehmann(d)
    walsh = [(d[i] + d[j]) / 2 for i in range(n) for j in range(i, n)]
    assert estimate == pytest.approx(np.median(walsh), rel=1e-12)
    p = lambda shift: stats.wilcoxon(d - shift, method="exact").pvalue  # noqa: E731
    eps = 1e-9 * (high - low)
    assert p(low + eps) > 0.05 and p(high - eps) > 0.05  # just inside: not rejected
    assert p(low - eps) <= 0.05 and p(high + eps) <= 0.05  # just outside: rejected
    assert 0.95 <= level < 0.97


def test_paired_counts_every_seed_and_matches_scipy():
    a = st.penalized([0.25, 0.26, np.nan, 0.24, 0.27, 0.23], 0.5)  # the diverged seed scores its start
    b = np.array([0.26, 0.28, 0.25, 0.25, 0.29, 0.24])
    t = st.paired(a, b)
    assert t["seeds"] == 6 and t["nonzero_pairs"] == 6
    assert t["p"] == pytest.approx(stats.wilcoxon(a - b).pvalue) and t["smallest_p"] == 2 / 2 ** 6
    assert t["estimate"] == st.hodges_lehmann(a - b)[0] and t["ci"] == list(st.hodges_lehmann(a - b)[1])


def test_probability_best_shares_ties_and_counts_divergence_by_the_rule():
    rng = np.random.default_rng(0)
    scores = np.column_stack([rng.normal(0.25, 0.001, 10), rng.normal(0.26, 0.001, 10), np.full(10, 0.5)])
    assert st.probability_best(scores, np.random.default_rng(1)) == [1.0, 0.0, 0.0]
    same = np.column_stack([np.full(10, 0.5)] * 3)  # every optimizer diverged on every seed
    assert st.probability_best(same, np.random.default_rng(1)) == pytest.approx([1 / 3] * 3)
    # Worst on every finite seed, diverged on one: it is not the first column's tie-break winner.
    worst = np.column_stack([np.r_[np.full(9, 0.30), 0.5], np.r_[np.full(9, 0.25), 0.5]])
    assert st.probability_best(worst, np.random.default_rng(1))[0] < 0.01
    tied = np.column_stack([np.arange(10.0), np.arange(10.0)[::-1]])
    p = st.probability_best(tied, np.random.default_rng(1))
    assert sum(p) == pytest.approx(1.0) and 0.4 < p[0] < 0.6  # symmetric: each wins about half


def test_each_statistic_draws_from_a_stream_of_its_own():
    one = st.rng_for(0, "probability_best", "sgd", "adagrad").random(3)
    assert np.array_equal(one, st.rng_for(0, "probability_best", "sgd", "adagrad").random(3))
    assert not np.array_equal(one, st.rng_for(0, "probability_best", "sgd", "rmsprop").random(3))
    scores = {o: {f: np.linspace(0.2, 0.3, 8) + i * 1e-3 for f in ("tuned", "book", "defaults")}
              for i, o in enumerate(["sgd", "adagrad"])}
    first = comparisons.paired_comparisons(scores, 0.001, seed=0)
    more = comparisons.paired_comparisons({**scores, "rmsprop": scores["sgd"]}, 0.001, seed=0)
    assert more["pairs"]["sgd_vs_adagrad"]["ci"] == first["pairs"]["sgd_vs_adagrad"]["ci"]


def test_tunability_on_a_landscape_with_a_known_answer():
    """100 grid points, one at the optimum (excess 1), the rest at excess 2: random search comes
    within 5% only by drawing the optimum, so E[min of b] = 2 - (1 - 0.99^b) <= 1.05 first at
    b = ceil(log(0.05) / log(0.99)) = 299 (and within 1% at 459)."""
    values = np.r_[1.0, np.full(99, 2.0)]
    curve = st.expected_best_with_replacement(values, np.arange(1, 501))
    np.testing.assert_allclose(curve, 2 - (1 - 0.99 ** np.arange(1, 501)))
    assert st.tunability(curve, optimum=1.0, floor=0.0) == {"0.01": 459, "0.05": 299}
    assert st.tunability(curve[:200], optimum=1.0, floor=0.0) == {"0.01": None, "0.05": None}


def test_random_search_on_a_known_distribution_and_a_grid_twice_as_fine():
    """f(u) = 1 + (u - 0.3)^2 with u uniform on [0, 1] (floor 0): E[min of b draws] is known by
    integration. The estimate from 1024 draws has it inside its interval, and the tunability numbers
    do not move by more than their interval when the optimum comes from a grid twice as fine."""
    from scipy import integrate

    f = lambda u: 1 + (u - 0.3) ** 2  # noqa: E731
    below = lambda y: min(1.0, min(np.sqrt(y), 0.3) + min(np.sqrt(y), 0.7))  # P(f(u) - 1 <= y)
    exact = 1 + integrate.quad(lambda y: (1 - below(y)) ** 100, 0, 0.49, limit=200, points=[0.09])[0]
    draws = f(np.random.default_rng(7).random(1024))
    results = {}
    for side in (64, 128):
        optimum = min(f(np.linspace(0, 1, side)).min(), draws.min())
        results[side] = comparisons.random_search(draws, 100, optimum, 0.0, 1.5, seed=0, name="synthetic")[1]
    low, high = results[64]["expected_best_ci"]
    assert low <= exact <= high
    for side in (64, 128):
        for alpha, (lo, hi) in results[side]["budget_to_within_ci"].items():
            assert lo <= results[64]["budget_to_within"][alpha] <= (hi or np.inf)
            assert lo <= results[128]["budget_to_within"][alpha] <= (hi or np.inf)
        lo, hi = results[side]["normalized_area_ci"]
        assert lo <= results[64]["normalized_area"] <= hi and lo <= results[128]["normalized_area"] <= hi


def test_sampler_repeats_are_reproducible_from_their_seeds(params, dataset):
    import dataclasses
    from pipeline.core import config
    p = dataclasses.replace(config.for_problem(params, "linreg"),
                            study=dataclasses.replace(params.study, n_trials=6, seeds_per_trial=1, optimizers=["rmsprop"]),
                            evaluate=dataclasses.replace(params.evaluate, sampler_repeats=2))
    first = samplers.compare(dataset, "rmsprop", p, penalty=0.6)
    assert first == samplers.compare(dataset, "rmsprop", p, penalty=0.6)
    assert {(r["sampler"], r["repeat"]) for r in first} == {(s, k) for s in samplers.SAMPLERS for k in range(2)}
    tpe = [r["best_so_far"] for r in first if r["sampler"] == "tpe" and r["repeat"] == 0]
    assert len(tpe) == 6 and all(np.diff(tpe) <= 0)  # best so far never rises
    other_seed = dataclasses.replace(p, study=dataclasses.replace(p.study, seed=1))
    assert samplers.compare(dataset, "rmsprop", other_seed, penalty=0.6) != first
