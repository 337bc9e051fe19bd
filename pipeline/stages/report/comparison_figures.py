"""Figures of the comparisons: tunability (TPE against random search) and the samplers' race."""
import numpy as np

from pipeline.stages.report.figures import color, label, panels

SAMPLER_STYLE = {"tpe": "-", "random": "--", "qmc": "-.", "cmaes": ":"}


FLOOR = 1e-9  # regret is never negative (the best known value is the lowest found anywhere); 0 is drawn here


def _excess(values, optimum):
    return (np.asarray(values, dtype=float) - optimum).clip(min=FLOOR)


def fig_tunability(d):
    fig, axes = panels(len(d.optimizers), height=2.6, sharey=True)
    notes = []
    for ax, o in zip(axes, d.optimizers):
        b, optimum = d.budget[d.budget.optimizer == o], d.opt[o]["best_known"]["value"]
        s = d.samplers[(d.samplers.optimizer == o) & (d.samplers.sampler == "tpe")]
        tpe = s.pivot_table(index="trials", columns="repeat", values="best_so_far")
        ax.fill_between(tpe.index, _excess(tpe.min(axis=1), optimum), _excess(tpe.max(axis=1), optimum),
                        color=color(o), alpha=0.2, label="TPE, range of seeds")
        ax.plot(tpe.index, _excess(tpe.median(axis=1), optimum), "-", color=color(o), label="TPE, median")
        ax.plot(b.trials, _excess(b.best_so_far, optimum), ":", color="k", lw=1, label="the study")
        ax.plot(b.trials, _excess(b.random_search_expected_best, optimum), "--", color="0.4",
                label="random search (expected)")
        ax.set(xscale="log", yscale="log", title=label(o))
        ax.set_xlabel("trials", fontsize=7)
        rs = d.opt[o]["random_search"]
        low, high = rs["expected_best_ci"]
        notes.append(f"{label(o)}: random search within 5% after {rs['budget_to_within']['0.05'] or '>n'} trials, "
                     f"expected best at n {rs['expected_best_at_budget']:.6f} (95% CI {low:.6f} to {high:.6f}), "
                     f"TPE matches it after {d.opt[o]['samplers']['tpe']['trials_to_match_random_search'] or '>n'}; "
                     f"the grid's optimum lies {d.opt[o]['grid_resolution_gap']:.1e} above the best known value (an "
                     f"estimate of how far the grid's resolution limits the grid, not a bound)")
    axes[0].set_ylabel("best - best known (log)")
    axes[-1].legend(fontsize=5)
    fig.tight_layout()
    return fig, (f"Tunability: TPE's best so far over {d.opt[d.optimizers[0]]['samplers']['tpe']['repeats']} sampler "
                 f"seeds (median and range), the study's own run, and the expected best of n random-search trials, "
                 f"computed exactly from {d.opt[d.optimizers[0]]['random_search']['draws']} points drawn from the "
                 f"search space (its interval: a bootstrap over them). Regret is against the best value known "
                 f"(grid, refinement, study and sampler trials), so it is never negative; a regret of 0 is drawn at "
                 f"{FLOOR:g}. {'; '.join(notes)}.")


def fig_samplers(d):
    fig, axes = panels(len(d.optimizers), height=2.6, sharey=True)
    notes = []
    for ax, o in zip(axes, d.optimizers):
        optimum = d.opt[o]["best_known"]["value"]
        for name, style in SAMPLER_STYLE.items():
            s = d.samplers[(d.samplers.optimizer == o) & (d.samplers.sampler == name)]
            median = s.groupby("trials").best_so_far.median()
            ax.plot(median.index, _excess(median, optimum), style, label=name)
        ax.set(xscale="log", yscale="log", title=f"{label(o)} ({len(d.opt[o]['tuned_hyperparams'])}-D)")
        ax.set_xlabel("trials", fontsize=7)
        regrets = d.opt[o]["samplers"]
        lowest = min(r["median_final_regret"] for r in regrets.values())
        best = [k for k, r in regrets.items() if r["median_final_regret"] == lowest]  # ties: all of them
        notes.append(f"{label(o)}: lowest median regret at n from {', '.join(best)} ({lowest:.1e})")
    axes[0].set_ylabel("median regret (log)")
    axes[-1].legend(fontsize=6)
    fig.tight_layout()
    one_d = [label(o) for o in d.optimizers if len(d.opt[o]["tuned_hyperparams"]) == 1]
    fallback = (f" On one-dimensional spaces ({', '.join(one_d)}) Optuna's CMA-ES samples at random." if one_d else "")
    return fig, (f"Optuna's samplers against the best known value, median over seeds (a regret of 0 drawn at {FLOOR:g}): TPE, random, Sobol (qmc) and "
                 f"CMA-ES, each with the study's budget and seeds. {'; '.join(notes)}.{fallback}")


