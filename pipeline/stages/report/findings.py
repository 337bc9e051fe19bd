"""The report's key findings and comparison tables: sentences and cells generated from the numbers
the evaluation wrote (reports/summary.json), never written by hand."""
from pipeline.core import statistics
from pipeline.stages.report.figures import fmt_hyper, fmt_loss, label

ALPHA = 0.05  # the level at which a Holm-adjusted p-value is called significant (statistics.ALPHA)


def _interval(t: dict) -> str:
    low, high = t["ci"]
    return f"{t['estimate']:+.2e} (95% CI {low:+.2e} to {high:+.2e})"


def _p(t: dict) -> str:
    return (f"Wilcoxon p = {t['p']:.3g}, Holm-adjusted {t['p_holm']:.3g} in the family of {t['family_size']} "
            f"{t['family']}; {t['seeds']} paired seeds")


def verdict_phrase(t: dict, a: str, margin: float) -> str:
    """What a comparison a - b says, in words: each of the four verdicts, never a tie for a loss."""
    return {
        "better": f"{a} is significantly better",
        "worse": f"{a} is significantly worse",
        "equivalent": f"practically equivalent (the interval lies inside the equivalence margin of +-{margin:.1e})",
        "inconclusive": f"inconclusive (not significant, and the interval reaches past the equivalence margin of "
                        f"+-{margin:.1e})",
    }[t["verdict"]]


def key_findings(summary: dict, names: list, n_trials: int) -> list:
    """The report's key findings, every word chosen by a number in summary.json."""
    c, opt = summary["comparisons"], summary["optimizers"]
    margin = summary["equivalence_margin"]["absolute"]
    lines = [f"Divergence rule: {summary['divergence_rule']}."]
    ranked = sorted(names, key=lambda o: opt[o]["tuned_final_loss"]["mean"])
    win, p_best = ranked[0], c["probability_best"]
    tied = [o for o in ranked if opt[o]["tuned_final_loss"]["mean"] == opt[win]["tuned_final_loss"]["mean"]]
    head = f"tied between {_names(tied)}" if len(tied) > 1 else label(win)
    diverged = opt[win]["tuned_final_loss"]["diverged_seeds"]
    text = (f"Lowest tuned final loss: {head}, {opt[win]['tuned_final_loss']['mean']:.5f} over "
            f"{len(summary['seeds'])} evaluation seeds"
            + (f" ({diverged} of which diverged and score their initial loss)" if diverged else "")
            + f"; it is the best in {p_best[win]:.0%} of bootstrap resamples of the seeds (ties shared).")
    if len(ranked) > 1:
        second = ranked[1]
        t = c["pairs"].get(f"{win}_vs_{second}") or statistics.flipped(c["pairs"][f"{second}_vs_{win}"])
        text += (f" Against {label(second)}, the runner-up, the paired difference (Hodges-Lehmann) is {_interval(t)}: "
                 f"{verdict_phrase(t, label(win), margin)} ({_p(t)}).")
    lines.append(text)
    for family, what in (("book", "the book's settings"), ("defaults", "the framework's default settings")):
        tests = c[f"tuned_vs_{family}"]
        parts = []
        for verdict, words in (("better", "better"), ("worse", "worse"), ("equivalent", "practically equivalent"),
                               ("inconclusive", "inconclusive")):
            found = [o for o in names if tests[o]["verdict"] == verdict]
            if found:
                numbers = "; ".join(f"{label(o)} {tests[o]['estimate']:+.2e}, Holm p {tests[o]['p_holm']:.3g}"
                                    for o in found) if verdict in ("better", "worse") else ""
                parts.append(f"{words} for {_names(found)}" + (f" ({numbers})" if numbers else ""))
        lines.append(f"Tuned against {what}: " + "; ".join(parts) + ".")
    lines.append(_power(c, summary))
    for o in names:
        if opt[o]["random_search"] is not None:  # a problem with the dense analyses
            lines.append(_search(o, opt[o], n_trials))
    return lines


def report_findings(r) -> list:
    """Every key finding of the report: the rule, the seed's claim, each problem's, and the profile."""
    first = next(iter(r.problems.values()))
    lines = [f"Divergence rule: {first.summary['divergence_rule']}."]
    claim = seed_claim(r.summary)
    if claim:
        lines.append(claim)
    for d in r.problems.values():
        lines += [f"{d.label}: {line}" for line in key_findings(d.summary, d.optimizers, d.params.study.n_trials)[1:]]
        lines.append(f"{d.label}: {lr_fall(d)}")
    return lines + [profile_sentence(r.summary["across"], r.optimizers)]


def lr_fall(d) -> str:
    """Each optimizer's effective lr at the end over its value at the first record, per layer."""
    parts = []
    for o in d.optimizers:
        ratio = d.opt[o]["effective_lr_ratio"]
        parts.append(f"{label(o)} " + ("every seed diverged" if not ratio else
                                       "/".join(f"x{v:.2f}" for v in ratio.values())))
    layers = list(d.opt[d.optimizers[0]]["effective_lr_ratio"]) or ["all"]
    where = "" if layers == ["all"] else f" ({', '.join(layers)})"
    return (f"effective learning rate of the median coordinate at the end of training over its value at the first "
            f"record{where}, tuned: {'; '.join(parts)}.")


def profile_sentence(across: dict, names: list) -> str:
    prof = across["performance_profile"]["optimizers"]
    ranked = sorted(names, key=lambda o: -prof[o]["area"])
    runs = prof[names[0]]["runs"]
    return (f"Performance profile over {runs} (problem, seed) runs of the tuned settings (target: "
            f"{across['target']}): area " + ", ".join(f"{label(o)} {prof[o]['area']:.2f}" for o in ranked)
            + "; reached the target at all: " + ", ".join(f"{label(o)} {prof[o]['reached']}/{runs}" for o in ranked)
            + ".")


CLAIM = "\"Adagrad is fine on the convex problem and falls behind on the deep one\""


def seed_claim(summary: dict):
    """Whether the data support the claim. Its convex half holds where tuned Adagrad is better than or
    practically equivalent to tuned RMSProp, its deep half where Adagrad is significantly worse; a half
    is contradicted by the opposite verdict (worse; better or equivalent), and undecided where the test
    is inconclusive. None without both kinds of problem."""
    tested = {p: s for p, s in summary["problems"].items() if "adagrad_vs_rmsprop" in s}
    if len({s["convex"] for s in tested.values()}) < 2:
        return None
    holds = {True: ("better", "equivalent"), False: ("worse",)}
    states = {p: "holds" if s["adagrad_vs_rmsprop"]["tuned"]["verdict"] in holds[s["convex"]] else
              "undecided" if s["adagrad_vs_rmsprop"]["tuned"]["verdict"] == "inconclusive" else "contradicted"
              for p, s in tested.items()}
    overall = ("support" if all(v == "holds" for v in states.values()) else
               "contradict" if "contradicted" in states.values() else "neither support nor contradict")
    details = []
    for p, s in tested.items():
        t, book, margin = s["adagrad_vs_rmsprop"]["tuned"], s["adagrad_vs_rmsprop"]["book"], \
            s["equivalence_margin"]["absolute"]
        details.append(f"on the {s['label']} its {'convex' if s['convex'] else 'deep'} half {states[p]}: tuned "
                       f"Adagrad - RMSProp is {_interval(t)}, {verdict_phrase(t, 'Adagrad', margin)} (Holm p "
                       f"{t['p_holm']:.3g}); at the book's settings {_interval(book)}, "
                       f"{verdict_phrase(book, 'Adagrad', margin)} (p {book['p']:.3g})")
    return f"The chapter's claim {CLAIM}: the data {overall} it. " + "; ".join(d[0].upper() + d[1:] for d in details) + "."
