"""The report's key findings and comparison tables: sentences and cells generated from the numbers
the evaluation wrote (reports/summary.json), never written by hand."""
from pipeline.core import statistics
from pipeline.stages.report.figures import ci_cell, ci_name, fmt_hyper, fmt_loss, label
from pipeline.stages.report.schedule_figures import schedule_finding

ALPHA = 0.05  # the level at which a Holm-adjusted p-value is called significant (statistics.ALPHA)


def _interval(t: dict) -> str:
    low, high = t["ci"]
    return f"{t['estimate']:+.2e} ({ci_name(t)} {low:+.2e} to {high:+.2e})"


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
        lines.append(f"{d.label}: {schedule_finding(d)}")
    return lines + [profile_sentence(r.summary["across"], r.optimizers)]


def lr_fall(d) -> str:
    """Each optimizer's effective lr at the end over its value at the first record, per layer."""
    parts = []
    for o in d.optimizers:
        ratio = d.opt[o]["effective_lr_ratio"]
        parts.append(f"{label(o)} " + ("every seed diverged" if not ratio else
                                       "/".join(f"x{v:.2f}" for v in ratio.values())))
    layers = next((list(d.opt[o]["effective_lr_ratio"]) for o in d.optimizers if d.opt[o]["effective_lr_ratio"]),
                  ["all"])  # an optimizer whose seeds all diverged has no ratios
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
              "is undecided" if s["adagrad_vs_rmsprop"]["tuned"]["verdict"] == "inconclusive" else "is contradicted"
              for p, s in tested.items()}
    overall = ("support" if all(v == "holds" for v in states.values()) else
               "contradict" if "is contradicted" in states.values() else "neither support nor contradict")
    details = []
    for p, s in tested.items():
        t, book, margin = s["adagrad_vs_rmsprop"]["tuned"], s["adagrad_vs_rmsprop"]["book"], \
            s["equivalence_margin"]["absolute"]
        details.append(f"on the {s['label']} its {'convex' if s['convex'] else 'deep'} half {states[p]}: tuned "
                       f"Adagrad - RMSProp is {_interval(t)}, {verdict_phrase(t, 'Adagrad', margin)} (Holm p "
                       f"{t['p_holm']:.3g}); at the book's settings {_interval(book)}, "
                       f"{verdict_phrase(book, 'Adagrad', margin)} (p {book['p']:.3g})")
    return f"The chapter's claim {CLAIM}: the data {overall} it. " + ". ".join(d[0].upper() + d[1:] for d in details) + "."


def _power(c: dict, summary: dict) -> str:
    """What the seeds allow: the smallest p attainable and whether the largest family can reach ALPHA."""
    tests = [t for group in ("pairs", "tuned_vs_book", "tuned_vs_defaults") for t in c[group].values()]
    worst = max(tests, key=lambda t: t["smallest_p"] * t["family_size"])
    reach = worst["smallest_p"] * worst["family_size"]
    can = "can" if reach < ALPHA else "cannot"
    return (f"Each comparison pairs {len(summary['seeds'])} seeds; the smallest two-sided p the exact Wilcoxon test "
            f"can give with {worst['nonzero_pairs']} non-zero differences is {worst['smallest_p']:.2g}, so in its "
            f"family of {worst['family_size']} a difference {can} reach Holm-adjusted significance "
            f"(best case {min(1.0, reach):.2g} against {ALPHA})"
            + ("." if can == "can" else ": raise evaluate.seeds to decide."))


def _search(o: str, s: dict, n: int) -> str:
    rs, samplers = s["random_search"], s["samplers"]
    reach = "; ".join(f"within {float(a):.0%} of the best known value's excess loss in "
                      f"{b if b is not None else f'more than {n}'} trials" for a, b in rs["budget_to_within"].items())
    tpe = samplers["tpe"]["trials_to_match_random_search"]
    matched = {k: v["trials_to_match_random_search"] for k, v in samplers.items()
               if v["trials_to_match_random_search"] is not None}
    if matched:
        fastest = min(matched.values())
        first = [k for k, v in matched.items() if v == fastest]
        if "cmaes" in first and len(s["tuned_hyperparams"]) == 1:
            first[first.index("cmaes")] = "cmaes (which samples at random on a one-dimensional space)"
        race = f"Of the samplers, {', '.join(first)} reached it first, after {fastest} trials."
    else:
        race = f"No sampler reached what random search expects in {n} trials within {n} trials."
    return (f"{label(o)}: random search is expected to come {reach} (tunability area {rs['normalized_area']:.3f}, "
            f"0 = the first draw is optimal). TPE (median of {samplers['tpe']['repeats']} seeds) reaches what random "
            f"search expects in {n} trials after {tpe if tpe is not None else f'more than {n}'}; the study itself "
            f"after {rs['study_trials_to_match'] if rs['study_trials_to_match'] is not None else f'more than {n}'}. "
            + race)


def _names(optimizers: list) -> str:
    return ", ".join(label(o) for o in optimizers)


def comparison_table(d) -> tuple:
    """Rows: every paired comparison (pairs of tuned optimizers, tuned vs book, tuned vs defaults)."""
    c = d.summary["comparisons"]
    header = ["comparison", "Hodges-Lehmann estimate (a - b)", "exact 95% CI (lower: all the seeds allow)", "Wilcoxon p",
              "Holm p", "family",
              "seeds (smallest p)", "verdict"]
    named = [(f"{label(a)} - {label(b)} (tuned)", c["pairs"][f"{a}_vs_{b}"])
             for i, a in enumerate(d.optimizers) for b in d.optimizers[i + 1:]]
    named += [(f"{label(o)}: tuned - {family}", c[f"tuned_vs_{family}"][o])
              for family in ("book", "defaults") for o in d.optimizers]
    return header, [[name, f"{t['estimate']:+.2e}", ci_cell(t), f"{t['p']:.3g}",
                     f"{t['p_holm']:.3g}", f"{t['family']} ({t['family_size']})",
                     f"{t['seeds']} ({t['smallest_p']:.1g})", t["verdict"]] for name, t in named]


def sampler_table(d) -> tuple:
    header = ["optimizer", "dimensions", "tpe", "random", "qmc (Sobol)", "cmaes"]
    rows = []
    for o in d.optimizers:
        s = d.opt[o]["samplers"]
        rows.append([label(o), str(len(d.opt[o]["tuned_hyperparams"])),
                     *[f"{s[k]['median_final_regret']:.2e} / {s[k]['trials_to_match_random_search'] or '>n'}"
                       for k in ("tpe", "random", "qmc", "cmaes")]])
    return header, rows


def results_table(d) -> tuple:
    header = ["optimizer", "book settings", "tuned settings", "book final loss", "tuned final loss (95% CI)",
              "examples to target (tuned)", "diverged trials", "trials"]
    rows = []
    for o in d.optimizers:
        s = d.opt[o]
        # The target, not the floor: a best known floor is one run's luck that tuned runs never reach.
        reach = s["tuned_examples_to_target"]
        reached = f"{reach['seeds_reached']}/{reach['seeds']}"
        steps = f"{reach['median']:.0f} ({reached} seeds)" if reach["median"] is not None else f"never ({reached})"
        rows.append([label(o), fmt_hyper(s["book_hyperparams"]), fmt_hyper(s["tuned_hyperparams"]),
                     fmt_loss(s["book_final_loss"]),
                     fmt_loss(s["tuned_final_loss"]),
                     steps, str(s["diverged_trials"]), str(s["trials"])])
        if "tuned_held_out_loss" in s:  # a problem with held-out data
            rows[-1].insert(6, fmt_loss(s["tuned_held_out_loss"]))
        if "tuned_held_out_accuracy" in s:  # a classifier
            rows[-1].insert(7, fmt_loss(s["tuned_held_out_accuracy"], 4))
    if rows and "tuned_held_out_loss" in d.opt[d.optimizers[0]]:
        header.insert(6, "tuned held-out loss (95% CI)")
    if rows and "tuned_held_out_accuracy" in d.opt[d.optimizers[0]]:
        header.insert(7, "tuned held-out accuracy (95% CI)")
    return header, rows
