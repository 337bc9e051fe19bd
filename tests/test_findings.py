"""The key findings are sentences generated from summary.json: fed synthetic summaries covering
every verdict, all seeds diverged, no sampler matching random search, zero and negative
differences, each sentence is asserted exactly."""
import copy

import pytest

from pipeline.core import statistics as st
from pipeline.stages.evaluate import comparisons
from pipeline.stages.report import findings

RULE = "a diverged run scores its initial loss"


def comparison(estimate, low, high, p, p_holm, verdict, family="pairs of tuned optimizers", size=3, seeds=20, nonzero=20):
    return {"estimate": estimate, "ci": [low, high], "ci_level": 0.95, "p": p, "p_holm": p_holm, "verdict": verdict,
            "family": family, "family_size": size, "seeds": seeds, "nonzero_pairs": nonzero,
            "smallest_p": st.smallest_p(nonzero)}


def optimizer(mean, diverged=0, tuned=None, to_match=None, tpe_match=None):
    samplers = {k: {"median_final_regret": 0.0, "repeats": 5, "trials_to_match_random_search": v}
                for k, v in zip(("tpe", "random", "qmc", "cmaes"), to_match or (None,) * 4)}
    if tpe_match is not None:
        samplers["tpe"]["trials_to_match_random_search"] = tpe_match
    return {"tuned_final_loss": {"mean": mean, "ci95": 1e-5, "diverged_seeds": diverged, "seeds": 20},
            "tuned_hyperparams": tuned or {"lr": 0.1},
            "random_search": {"budget_to_within": {"0.01": 40, "0.05": None}, "normalized_area": 0.125,
                              "study_trials_to_match": 12},
            "samplers": samplers}


def summary(pairs, book, defaults, opts, probability):
    return {"seeds": list(range(1000, 1020)), "divergence_rule": RULE,
            "equivalence_margin": {"fraction": 0.01, "absolute": 0.0025},
            "optimizers": opts,
            "comparisons": {"pairs": pairs, "tuned_vs_book": book, "tuned_vs_defaults": defaults,
                            "probability_best": probability}}


BOOK = {"sgd": comparison(-1e-3, -2e-3, -5e-4, 1e-6, 3e-6, "better", "tuned vs book"),
        "adagrad": comparison(2e-3, 1e-3, 3e-3, 1e-6, 3e-6, "worse", "tuned vs book"),
        "rmsprop": comparison(0.0, -1e-4, 1e-4, 0.6, 1.0, "equivalent", "tuned vs book")}
DEFAULTS = {"sgd": comparison(-1e-3, -4e-3, 1e-3, 0.2, 0.6, "inconclusive", "tuned vs defaults"),
            "adagrad": comparison(-1e-3, -4e-3, 1e-3, 0.2, 0.6, "inconclusive", "tuned vs defaults"),
            "rmsprop": comparison(-1e-3, -4e-3, 1e-3, 0.2, 0.6, "inconclusive", "tuned vs defaults")}
NAMES = ["sgd", "adagrad", "rmsprop"]


def base(pair_verdict="inconclusive", estimate=2e-6):
    pairs = {"sgd_vs_adagrad": comparison(1e-3, 5e-4, 2e-3, 1e-6, 3e-6, "worse"),
             "sgd_vs_rmsprop": comparison(1e-3, 5e-4, 2e-3, 1e-6, 3e-6, "worse"),
             "adagrad_vs_rmsprop": comparison(-estimate, -3e-3, 3e-3, 0.7, 1.0, pair_verdict)}
    opts = {"sgd": optimizer(0.25), "adagrad": optimizer(0.24291, to_match=(30, 12, 12, None)),
            "rmsprop": optimizer(0.242912, tpe_match=7)}
    return summary(pairs, copy.deepcopy(BOOK), copy.deepcopy(DEFAULTS), opts,
                   {"sgd": 0.0, "adagrad": 0.6, "rmsprop": 0.4})


def test_every_verdict_and_the_rule_and_the_power_in_exact_sentences():
    lines = findings.key_findings(base(), NAMES, 100)
    assert lines[0] == f"Divergence rule: {RULE}."
    assert lines[1] == (
        "Lowest tuned final loss: Adagrad, 0.24291 over 20 evaluation seeds; it is the best in 60% of bootstrap "
        "resamples of the seeds (ties shared). Against RMSProp, the runner-up, the paired difference (Hodges-Lehmann) "
        "is -2.00e-06 (95% CI -3.00e-03 to +3.00e-03): inconclusive (not significant, and the interval reaches past "
        "the equivalence margin of +-2.5e-03) (Wilcoxon p = 0.7, Holm-adjusted 1 in the family of 3 pairs of tuned "
        "optimizers; 20 paired seeds).")
    assert lines[2] == ("Tuned against the book's settings: better for SGD (SGD -1.00e-03, Holm p 3e-06); worse for "
                        "Adagrad (Adagrad +2.00e-03, Holm p 3e-06); practically equivalent for RMSProp.")
    assert lines[3] == "Tuned against the framework's default settings: inconclusive for SGD, Adagrad, RMSProp."
    assert lines[4] == ("Each comparison pairs 20 seeds; the smallest two-sided p the exact Wilcoxon test can give "
                        "with 20 non-zero differences is 1.9e-06, so in its family of 3 a difference can reach "
                        "Holm-adjusted significance (best case 5.7e-06 against 0.05).")
    assert lines[5] == (
        "SGD: random search is expected to come within 1% of the best known value's excess loss in 40 trials; within "
        "5% of the best known value's excess loss in more than 100 trials (tunability area 0.125, 0 = the first draw "
        "is optimal). TPE (median of 5 seeds) reaches what random search expects in 100 trials after more than 100; "
        "the study itself after 12. No sampler reached what random search expects in 100 trials within 100 trials.")
    assert lines[6].endswith("after 30; the study itself after 12. Of the samplers, random, qmc reached it first, "
                             "after 12 trials.")  # a tie named in full, not broken by a regret
    assert lines[7].endswith("Of the samplers, tpe reached it first, after 7 trials.")


@pytest.mark.parametrize("verdict, phrase", [
    ("better", "Adagrad is significantly better"),
    ("worse", "Adagrad is significantly worse"),
    ("equivalent", "practically equivalent (the interval lies inside the equivalence margin of +-2.5e-03)"),
])
def test_the_runner_up_sentence_follows_the_verdict_seen_from_the_winner(verdict, phrase):
    # adagrad_vs_rmsprop is stored as a - b with a = Adagrad, the winner: no flip.
    s = base(verdict)
    assert f"(Hodges-Lehmann) is -2.00e-06 (95% CI -3.00e-03 to +3.00e-03): {phrase} (" in \
        findings.key_findings(s, NAMES, 100)[1]
    # The winner second in the pair's name: the difference and the verdict turn round with it.
    s["optimizers"]["rmsprop"]["tuned_final_loss"]["mean"] = 0.2429
    flipped = {"better": "RMSProp is significantly worse", "worse": "RMSProp is significantly better"}
    assert f"is +2.00e-06 (95% CI -3.00e-03 to +3.00e-03): {flipped.get(verdict, phrase)} (" in \
        findings.key_findings(s, NAMES, 100)[1]


def test_a_zero_difference_ties_and_all_seeds_diverged_are_said_as_such():
    s = base()
    for key in s["comparisons"]["pairs"]:  # every seed diverged for all: every difference is exactly 0
        s["comparisons"]["pairs"][key] = comparison(0.0, 0.0, 0.0, 1.0, 1.0, "equivalent", nonzero=0)
    for o in NAMES:
        s["optimizers"][o]["tuned_final_loss"].update(mean=0.5, diverged_seeds=20)  # every seed scores its start
    lines = findings.key_findings(s, NAMES, 100)
    assert lines[1].startswith("Lowest tuned final loss: tied between SGD, Adagrad, RMSProp, 0.50000 over 20 "
                               "evaluation seeds (20 of which diverged and score their initial loss);")
    assert lines[1].endswith("Against Adagrad, the runner-up, the paired difference (Hodges-Lehmann) is +0.00e+00 "
                             "(95% CI +0.00e+00 to +0.00e+00): practically equivalent (the interval lies inside the "
                             "equivalence margin of +-2.5e-03) (Wilcoxon p = 1, Holm-adjusted 1 in the family of 3 "
                             "pairs of tuned optimizers; 20 paired seeds).")


def test_too_few_seeds_are_said_to_be_too_few():
    s = base()
    for group in ("pairs", "tuned_vs_book", "tuned_vs_defaults"):
        for t in s["comparisons"][group].values():
            t.update(smallest_p=st.smallest_p(9), nonzero_pairs=9, family_size=21 if group == "pairs" else 3)
    assert findings.key_findings(s, NAMES, 100)[4] == (
        "Each comparison pairs 20 seeds; the smallest two-sided p the exact Wilcoxon test can give with 9 non-zero "
        "differences is 0.0039, so in its family of 21 a difference cannot reach Holm-adjusted significance (best "
        "case 0.082 against 0.05): raise evaluate.seeds to decide.")


def test_verdicts_come_from_the_statistics_not_from_the_sentences():
    """The verdict each sentence reads is computed: Holm across the family, then sign or margin."""
    scores = {"a": {"tuned": [0.30 + 0.001 * i for i in range(20)], "book": [0.40 + 0.001 * i for i in range(20)],
                    "defaults": [0.30 + 0.001 * i for i in range(20)]},
              "b": {"tuned": [0.20 + 0.001 * i for i in range(20)], "book": [0.10 + 0.001 * i for i in range(20)],
                    "defaults": [0.20 + 0.0001 * (i % 3 - 1) + 0.001 * i for i in range(20)]}}
    c = comparisons.paired_comparisons(scores, margin=0.001, seed=0)
    assert c["tuned_vs_book"]["a"]["verdict"] == "better" and c["tuned_vs_book"]["b"]["verdict"] == "worse"
    assert c["tuned_vs_defaults"]["b"]["verdict"] == "equivalent"  # differences of +-1e-4 inside a 1e-3 margin
    assert c["pairs"]["a_vs_b"]["verdict"] == "worse" and c["pairs"]["a_vs_b"]["family_size"] == 1


def test_an_interval_below_95_percent_says_its_level():
    """Four seeds cannot give an exact 95% interval: the sentence and the cell name the level the
    statistics module achieved (from its own computation, not typed here)."""
    from pipeline.stages.report.figures import ci_cell, ci_name

    test = st.paired([0.3, 0.2, 0.25, 0.31], [0.1, 0.11, 0.12, 0.13])
    level = test["ci_level"]
    assert level < 0.95
    assert ci_name(test) == f"{level:.1%} CI, the widest 4 seeds allow"
    assert ci_cell(test).endswith(f" ({level:.1%})")
    assert ci_name(comparison(0, -1, 1, 1, 1, "inconclusive")) == "95% CI"


def test_the_lr_fall_sentence_word_for_word():
    from types import SimpleNamespace
    d = SimpleNamespace(optimizers=["sgd", "adagrad", "rmsprop"], opt={
        "sgd": {"effective_lr_ratio": {"layer1": 1.0, "layer2": 1.0}},
        "adagrad": {"effective_lr_ratio": {"layer1": 0.263, "layer2": 0.5049}},
        "rmsprop": {"effective_lr_ratio": {}}})  # every seed diverged
    assert findings.lr_fall(d) == (
        "effective learning rate of the median coordinate at the end of training over its value at the first record "
        "(layer1, layer2), tuned: SGD x1.00/x1.00; Adagrad x0.26/x0.50; RMSProp every seed diverged.")
    linear = SimpleNamespace(optimizers=["adagrad"], opt={"adagrad": {"effective_lr_ratio": {"all": 0.746}}})
    assert findings.lr_fall(linear) == ("effective learning rate of the median coordinate at the end of training over "
                                        "its value at the first record, tuned: Adagrad x0.75.")


def test_the_profile_sentence_word_for_word():
    across = {"target": "linreg: within 1% of the least-squares floor (0.24000)",
              "performance_profile": {"optimizers": {
                  "sgd": {"area": 0.4, "reached": 30, "runs": 40},
                  "adagrad": {"area": 0.725, "reached": 38, "runs": 40},
                  "rmsprop": {"area": 0.61, "reached": 40, "runs": 40}}}}
    assert findings.profile_sentence(across, ["sgd", "adagrad", "rmsprop"]) == (
        "Performance profile over 40 (problem, seed) runs of the tuned settings (target: linreg: within 1% of the "
        "least-squares floor (0.24000)): area Adagrad 0.72, RMSProp 0.61, SGD 0.40; reached the target at all: "
        "Adagrad 38/40, RMSProp 40/40, SGD 30/40.")


def _schedules_problem(studies):
    from types import SimpleNamespace
    demo = {"optimizer": "sgd", "hyperparams": {"lr": 0.05}, "schedule": "cosine", "settings": {"final": 0.01},
            "constant_final_loss": {"mean": 0.2431, "ci95": 0.0012, "diverged_seeds": 0, "seeds": 20},
            "scheduled_final_loss": {"mean": 0.2399, "ci95": 0.0008, "diverged_seeds": 0, "seeds": 20},
            "test": comparison(-3.2e-3, -4.1e-3, -2.5e-3, 1.9e-6, 1.9e-6, "better")}
    return SimpleNamespace(summary={"schedules": {"studies": studies, "demo": demo}})


def test_the_schedule_findings_word_for_word():
    from pipeline.stages.report.schedule_figures import schedule_finding
    assert schedule_finding(_schedules_problem({})) == (
        "Schedules: only constant rates were tuned (study.schedules). The book's SGD (lr 0.05) ends at 0.24310 +/- "
        "0.00120 at a constant rate and at 0.23990 +/- 0.00080 with cosine decay (final 0.01 of the initial rate at "
        "the end); cosine - constant -3.20e-03 (95% CI -4.10e-03 to -2.50e-03, Wilcoxon p 1.9e-06): the schedule is "
        "significantly better.")
    studies = {"sgd": {"cosine": {"test": comparison(-1.5e-3, -2e-3, -1e-3, 1e-4, 4e-4, "better")},
                       "multifactor": {"test": comparison(2e-3, 1e-3, 3e-3, 1e-4, 4e-4, "worse")}},
               "adagrad": {"cosine": {"test": comparison(1e-4, -1e-3, 1e-3, 0.5, 1.0, "inconclusive")}}}
    assert schedule_finding(_schedules_problem(studies)) == (
        "Schedules: SGD gains from cosine (-1.50e-03 final loss, 95% CI -2.00e-03 to -1.00e-03, Holm p 0.0004); "
        "worse with a schedule: SGD with multi-factor.")
    del studies["sgd"]["cosine"]
    assert schedule_finding(_schedules_problem(studies)) == (
        "Schedules: no optimizer gains significantly from a schedule over its tuned constant rate (2 tests, "
        "Holm-corrected); worse with a schedule: SGD with multi-factor.")
