"""The report's key findings and comparison tables: sentences and cells generated from the numbers
the evaluation wrote (reports/summary.json), never written by hand."""
from pipeline.stages.report.figures import fmt_hyper, fmt_loss, label

ALPHA = 0.05  # the level at which a Holm-adjusted p-value is called significant


def _diff(t: dict) -> str:
    low, high = t["ci95"]
    return f"{t['mean_diff']:+.2e} (95% CI {low:+.2e} to {high:+.2e})"


def _p(t: dict) -> str:
    return f"Wilcoxon p = {t['p']:.3g}, Holm-adjusted {t['p_holm']:.3g}, {t['seeds']} paired seeds"


def key_findings(d) -> list:
    c, opt, names = d.summary["comparisons"], d.opt, d.optimizers
    lines = []
    p_best = c["probability_best"]
    ranked = sorted((o for o in names if opt[o]["tuned_final_loss"]["mean"] is not None),
                    key=lambda o: opt[o]["tuned_final_loss"]["mean"])
    if ranked:
        win = ranked[0]
        text = (f"Lowest tuned final loss: {label(win)}, {opt[win]['tuned_final_loss']['mean']:.5f} over "
                f"{len(d.summary['seeds'])} evaluation seeds; it is the best in {p_best[win]:.0%} of bootstrap "
                f"resamples of the seeds.")
        if len(ranked) > 1:
            second = ranked[1]
            t = c["pairs"].get(f"{win}_vs_{second}") or _flip(c["pairs"][f"{second}_vs_{win}"])
            if t["mean_diff"] is not None:
                verdict = "a significant" if t["p_holm"] < ALPHA else "not a significant"
                text += (f" Against {label(second)}, the runner-up, the paired difference is {_diff(t)}: "
                         f"{verdict} difference ({_p(t)}).")
        lines.append(text)
    for family, what in (("book", "the book's settings"), ("defaults", "the framework's default settings")):
        tests = c[f"tuned_vs_{family}"]
        better = [o for o, t in tests.items() if t["mean_diff"] is not None and t["p_holm"] < ALPHA
                  and t["mean_diff"] < 0]
        rest = [o for o in tests if o not in better]
        text = f"Tuning beat {what} significantly for {_names(better) or 'no optimizer'}"
        if better:
            text += " (" + "; ".join(f"{label(o)} {tests[o]['mean_diff']:+.2e}, Holm p {tests[o]['p_holm']:.3g}"
                                     for o in better) + ")"
        lines.append(text + (f"; not for {_names(rest)}." if rest else "."))
    n = d.params.study.n_trials
    for o in names:
        rs, s = opt[o]["random_search"], opt[o]["samplers"]
        within = rs["budget_to_within"]
        reach = "; ".join(f"within {float(a):.0%} of the grid optimum's excess loss in "
                          f"{b if b is not None else f'more than {n}'} trials" for a, b in within.items())
        tpe = s["tpe"]["trials_to_match_random_search"]
        first = min(s, key=lambda k: (s[k]["trials_to_match_random_search"] or n + 1, s[k]["median_final_regret"]))
        if first == "cmaes" and len(opt[o]["tuned_hyperparams"]) == 1:
            first = "cmaes (which samples at random on a one-dimensional space, with its own seeds)"
        lines.append(f"{label(o)}: random search on the grid is expected to come {reach}. TPE (median of "
                     f"{s['tpe']['repeats']} seeds) reaches what random search expects in {n} trials after "
                     f"{tpe if tpe is not None else f'more than {n}'}; the study itself after "
                     f"{rs['study_trials_to_match'] if rs['study_trials_to_match'] is not None else f'more than {n}'}. "
                     f"Of the samplers, {first} got there first.")
    return lines


def _flip(t: dict) -> dict:
    if t["mean_diff"] is None:
        return t
    return {**t, "mean_diff": -t["mean_diff"], "ci95": [-t["ci95"][1], -t["ci95"][0]]}


def _names(optimizers: list) -> str:
    return ", ".join(label(o) for o in optimizers)


def comparison_table(d) -> tuple:
    """Rows: every paired comparison (pairs of tuned optimizers, tuned vs book, tuned vs defaults)."""
    c = d.summary["comparisons"]
    header = ["comparison", "mean difference (a - b)", "95% bootstrap CI", "Wilcoxon p", "Holm p", "seeds"]
    rows = []
    named = [(f"{label(a)} - {label(b)} (tuned)", c["pairs"][f"{a}_vs_{b}"])
             for i, a in enumerate(d.optimizers) for b in d.optimizers[i + 1:]]
    named += [(f"{label(o)}: tuned - {family}", c[f"tuned_vs_{family}"][o])
              for family in ("book", "defaults") for o in d.optimizers]
    for name, t in named:
        if t["mean_diff"] is None:
            rows.append([name, "n/a", "n/a", "n/a", "n/a", str(t["seeds"])])
        else:
            rows.append([name, f"{t['mean_diff']:+.2e}", f"{t['ci95'][0]:+.2e} to {t['ci95'][1]:+.2e}",
                         f"{t['p']:.3g}", f"{t['p_holm']:.3g}", str(t["seeds"])])
    return header, rows


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
              "examples to floor (tuned)", "diverged trials", "trials"]
    rows = []
    for o in d.optimizers:
        s = d.opt[o]
        reach = s["tuned_examples_to_floor"]
        steps = f"{reach['median']:.0f} ({reach['seeds_reached']}/{reach['seeds']} seeds)" if reach["median"] else \
            f"never ({reach['seeds_reached']}/{reach['seeds']})"
        rows.append([label(o), fmt_hyper(s["book_hyperparams"]), fmt_hyper(s["tuned_hyperparams"]),
                     fmt_loss(s["book_final_loss"]),
                     fmt_loss(s["tuned_final_loss"]),
                     steps, str(s["diverged_trials"]), str(s["trials"])])
    return header, rows
