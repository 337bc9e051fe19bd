"""Across problems: the performance profile against a direct count, the excess table's ranks, the
per-layer effective-lr ratio, and the seed's claim in exact sentences for each way it can come out."""
import numpy as np
import pytest

from pipeline.core import engine, problems
from pipeline.stages.evaluate import across
from pipeline.stages.evaluate.problem import lr_ratio
from pipeline.stages.report import findings
from test_findings import comparison


def test_performance_profile_counts_runs_within_tau_of_the_fastest():
    """Three optimizers on five (problem, seed) runs, with ties, a run nobody finishes and one only
    one finishes; each point of the profile recounted by hand from the definition."""
    reached = {"a": [100, 200, None, 300, None], "b": [200, 200, None, 1200, 50], "c": [None, 700, None, 300, None]}
    profile = across.performance_profile(reached)
    ratios = {"a": [1.0, 1.0, np.inf, 1.0, np.inf], "b": [2.0, 1.0, np.inf, 4.0, 1.0],
              "c": [np.inf, 3.5, np.inf, 1.0, np.inf]}
    for o, r in ratios.items():
        for tau, got in zip(profile["taus"], profile["optimizers"][o]["profile"]):
            assert got == sum(x <= tau for x in r) / 5
        grid = np.linspace(1, 4, 3001)  # the area by a fine Riemann sum of the step function
        fine = np.array([sum(x <= t for x in r) / 5 for t in grid])
        assert profile["optimizers"][o]["area"] == pytest.approx(fine.mean(), abs=1e-3)
    assert profile["optimizers"]["a"]["profile"][0] == 0.6 and profile["optimizers"]["b"]["reached"] == 4
    assert profile["optimizers"]["c"]["area"] == pytest.approx((1 + (4 - 3.5) / 3) / 5, abs=1e-9)


def test_excess_table_ranks_with_ties_sharing_the_better_rank():
    problems = {"p": {"floor": 0.1, "optimizers": {o: {"tuned_final_loss": {"mean": m, "ci95": 0.01}}
                                                   for o, m in (("a", 0.2), ("b", 0.15), ("c", 0.15))}}}
    table = across.excess_table(problems, ["a", "b", "c"])
    assert [table["p"][o]["rank"] for o in "abc"] == [3, 1, 1]
    assert table["p"]["a"]["excess"] == pytest.approx(0.1)


def test_lr_ratio_is_last_over_first_median_per_layer(dataset, params):
    result = engine.train(dataset, "adagrad", {"lr": 0.1}, [0, 1], params.train, "linreg")
    linreg, mlp = problems.get("linreg"), problems.get("mlp")
    got = lr_ratio(result, linreg.rate_layers(linreg.lr_columns(5)))
    med = np.median(result.effective_lr, axis=2)
    assert got == {"all": pytest.approx(np.mean(med[:, -1] / med[:, 0]))} and got["all"] < 1
    eff = np.ones((2, 3, 6))
    eff[:, -1, 1], eff[:, -1, 4] = 0.5, 2.0  # layer1's and layer2's medians
    fake = result._replace(effective_lr=eff, diverged=np.array([False, False]))
    assert mlp.rate_layers(mlp.lr_columns(5)) == {"layer1": 1, "layer2": 4, "layer3": 7}
    assert lr_ratio(fake, {"layer1": 1, "layer2": 4}) == {"layer1": 0.5, "layer2": 2.0}


def claim_summary(convex_verdict, deep_verdict):
    def problem(label, convex, verdict):
        t = comparison(1e-3 if verdict == "worse" else -1e-3, -2e-3, 2e-3, 1e-4, 3e-4, verdict)
        return {"label": label, "convex": convex, "equivalence_margin": {"absolute": 0.0025},
                "adagrad_vs_rmsprop": {"tuned": t, "book": comparison(0.0, -1e-4, 1e-4, 0.6, 0.6, "equivalent")}}
    return {"problems": {"linreg": problem("linear regression (convex)", True, convex_verdict),
                         "mlp": problem("tanh network", False, deep_verdict)}}


@pytest.mark.parametrize("convex, deep, word, halves", [
    ("equivalent", "worse", "support", ("holds", "holds")),
    ("better", "worse", "support", ("holds", "holds")),
    ("inconclusive", "worse", "neither support nor contradict", ("is undecided", "holds")),
    ("equivalent", "inconclusive", "neither support nor contradict", ("holds", "is undecided")),
    ("worse", "worse", "contradict", ("is contradicted", "holds")),
    ("equivalent", "equivalent", "contradict", ("holds", "is contradicted")),
    ("equivalent", "better", "contradict", ("holds", "is contradicted")),
])
def test_the_seed_claim_sentence_follows_the_verdicts(convex, deep, word, halves):
    text = findings.seed_claim(claim_summary(convex, deep))
    assert text.startswith(f'The chapter\'s claim "Adagrad is fine on the convex problem and falls behind on the deep '
                           f'one": the data {word} it. On the linear regression (convex) its convex half {halves[0]}: ')
    assert f"). On the tanh network its deep half {halves[1]}: tuned Adagrad - RMSProp is" in text
    assert "at the book's settings +0.00e+00 (95% CI -1.00e-04 to +1.00e-04), practically equivalent" in text


def test_no_claim_without_both_kinds_of_problem():
    s = claim_summary("equivalent", "worse")
    del s["problems"]["mlp"]
    assert findings.seed_claim(s) is None


@pytest.mark.parametrize("order", [["adagrad", "rmsprop", "sgd"], ["rmsprop", "sgd", "adagrad"]])
def test_the_claim_is_adagrad_minus_rmsprop_whichever_is_listed_first(order):
    """With RMSProp listed first the family holds rmsprop_vs_adagrad, and the claim flips it: either
    way, tuned Adagrad - RMSProp against a computation written here (Walsh averages, the Wilcoxon
    table's critical value for n = 12, scipy's exact test, Holm by hand)."""
    import statistics as py_statistics

    from scipy import stats

    from pipeline.stages.evaluate import comparisons
    rng = np.random.default_rng(5)
    base = rng.normal(0.3, 0.01, 12)
    losses = {"adagrad": base + rng.normal(0.004, 0.002, 12), "rmsprop": base, "sgd": base + rng.normal(0.01, 0.003, 12)}
    scores = {o: {"tuned": losses[o], "book": losses[o] + 0.001 * (o == "adagrad"), "defaults": losses[o] + 0.002}
              for o in order}
    pairs = comparisons.paired_comparisons(scores, 0.001, 0)["pairs"]
    assert ("rmsprop_vs_adagrad" in pairs) == (order[0] == "rmsprop")
    claim = across.adagrad_against_rmsprop(scores, pairs, 0.001)["tuned"]

    d = losses["adagrad"] - losses["rmsprop"]
    walsh = sorted((d[i] + d[j]) / 2 for i in range(12) for j in range(i, 12))  # 78 averages
    assert claim["estimate"] == pytest.approx(py_statistics.median(walsh), rel=1e-12)
    # Two-sided 5% critical value of the signed-rank statistic for n = 12 is 13 (reject T <= 13), so
    # the interval runs from the 14th smallest Walsh average to the 14th largest.
    assert claim["ci"] == pytest.approx([walsh[13], walsh[78 - 14]], rel=1e-12)
    p = {pair: stats.wilcoxon(losses[a] - losses[b], method="exact").pvalue
         for pair, (a, b) in {"ar": ("adagrad", "rmsprop"), "as": ("adagrad", "sgd"), "rs": ("rmsprop", "sgd")}.items()}
    ranked = sorted(p, key=p.get)
    holm = {k: min(1.0, max((3 - i) * p[ranked[i]] for i in range(ranked.index(k) + 1))) for k in p}
    assert claim["p"] == pytest.approx(p["ar"], rel=1e-9) and claim["p_holm"] == pytest.approx(holm["ar"], rel=1e-9)
    assert claim["verdict"] == "worse"  # Adagrad's losses are higher on every seed here


def test_the_profile_target_is_the_floor_band_or_the_best_tuned_median():
    """A closed-form floor: within the tolerance of it. Otherwise the median final loss of the tuned
    optimizer whose median is lowest (here not the one with the lowest mean, nor the first listed)."""
    from types import SimpleNamespace

    from pipeline.stages.evaluate import measures
    convex = measures.target(SimpleNamespace(floor="least_squares", floor_words="least-squares"), 0.2, 0.01, {})
    assert convex["value"] == pytest.approx(0.202, rel=1e-15)
    assert convex["rule"] == "within 1% of the least-squares floor"
    finals = {"sgd": [0.30, 0.31, 0.90, 0.32, 0.29],  # mean 0.424, median 0.31
              "rmsprop": [0.33, 0.34, 0.33, 0.35, 0.34],  # mean 0.338, median 0.34
              "adagrad": [0.305, 0.40, 0.30, 0.50, 0.32]}  # mean 0.365, median 0.32
    deep = measures.target(SimpleNamespace(floor="best_known"), 0.1, 0.01, finals)
    assert deep["value"] == 0.31
    assert deep["rule"] == "the median final loss of the best tuned optimizer (sgd), as AlgoPerf sets targets"
