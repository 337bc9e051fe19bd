"""Across problems: each optimizer's tuned excess loss and rank per problem, the performance profile
(Dolan and More, as AlgoPerf scores submissions), and the seed's claim about Adagrad and RMSProp."""
import numpy as np

from pipeline.core import statistics as st

TAUS = np.round(np.linspace(1.0, 4.0, 61), 2)  # the profile's step ratios, 1 to 4 in steps of 0.05


def excess_table(problems: dict, names: list) -> dict:
    """problem -> optimizer -> tuned final loss over the floor (mean, 95% half-width) and rank (1 is the
    lowest mean; equal means share the better rank)."""
    table = {}
    for problem, result in problems.items():
        means = {o: result["optimizers"][o]["tuned_final_loss"]["mean"] for o in names}
        table[problem] = {o: {"excess": means[o] - result["floor"],
                              "ci95": result["optimizers"][o]["tuned_final_loss"]["ci95"],
                              "rank": 1 + sum(m < means[o] for m in means.values())} for o in names}
    return table


def step_ratios(reached: dict) -> dict:
    """reached: optimizer -> (runs,) examples when each run reached its target (None: never), the runs
    of all optimizers on the same (problem, seed) at the same index. Each run's examples over the
    fastest optimizer's on that run; inf where the run never reached it (or no optimizer did)."""
    steps = {o: np.array([np.inf if x is None else float(x) for x in r]) for o, r in reached.items()}
    fastest = np.min(np.vstack(list(steps.values())), axis=0)
    with np.errstate(invalid="ignore"):
        return {o: np.where(np.isfinite(s), s / fastest, np.inf) for o, s in steps.items()}


def performance_profile(reached: dict, taus=TAUS) -> dict:
    """Per optimizer, the fraction of runs whose step ratio is at most tau for each tau, and the
    profile's exact area over [1, 4] divided by 3 (a run with ratio r counts for the part of [1, 4]
    from r on): 1 means fastest to the target on every run, 0 never within 4 times the fastest."""
    ratios = step_ratios(reached)
    lo, hi = taus[0], taus[-1]
    out = {}
    for o, r in ratios.items():
        profile = [float(np.mean(r <= tau)) for tau in taus]
        area = float(np.mean(np.clip((hi - np.maximum(r, lo)) / (hi - lo), 0.0, 1.0)))
        out[o] = {"profile": profile, "area": area, "reached": int(np.isfinite(r).sum()), "runs": int(len(r))}
    return {"taus": [float(t) for t in taus], "optimizers": out}


def adagrad_against_rmsprop(scores: dict, pairs: dict, margin: float) -> dict:
    """The seed's claim on one problem: Adagrad - RMSProp, tuned (from the Holm family of all pairs,
    which holds rmsprop_vs_adagrad where RMSProp is listed first) and at the book's settings (a test
    of its own), each with its verdict."""
    tuned_test = pairs.get("adagrad_vs_rmsprop") or st.flipped(pairs["rmsprop_vs_adagrad"])
    book = st.paired(scores["adagrad"]["book"], scores["rmsprop"]["book"])
    book.update(p_holm=book["p"], family="book settings, Adagrad vs RMSProp", family_size=1)
    book["verdict"] = st.verdict(book, margin)
    return {"tuned": tuned_test, "book": book}


def across(problems: dict, names: list) -> dict:
    reached = {o: [x for p in problems.values() for x in p["optimizers"][o]["tuned_examples_reached"]] for o in names}
    return {"problems": list(problems), "excess": excess_table(problems, names),
            "performance_profile": performance_profile(reached),
            "target": "; ".join(f"{p}: {r['target']['rule']} ({r['target']['value']:.5f})" for p, r in problems.items())
                      + "; tuned settings, every evaluation seed"}
