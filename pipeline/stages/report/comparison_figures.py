"""Figures of the comparisons: tunability (TPE against random search) and the samplers' race."""
import numpy as np

from pipeline.stages.report.figures import color, label, panels

SAMPLER_STYLE = {"tpe": "-", "random": "--", "qmc": "-.", "cmaes": ":"}


def _excess(values, optimum):
    return (np.asarray(values, dtype=float) - optimum).clip(min=1e-9)  # log axis: at or below the optimum shows as 1e-9


def fig_tunability(d):
    fig, axes = panels(len(d.optimizers), height=2.6, sharey=True)
    notes = []
    for ax, o in zip(axes, d.optimizers):
        b, optimum = d.budget[d.budget.optimizer == o], d.opt[o]["grid_optimum"]
        s = d.samplers[(d.samplers.optimizer == o) & (d.samplers.sampler == "tpe")]
        tpe = s.pivot_table(index="trials", columns="repeat", values="best_so_far")
        ax.fill_between(tpe.index, _excess(tpe.min(axis=1), optimum), _excess(tpe.max(axis=1), optimum),
                        color=color(o), alpha=0.2, label="TPE, range of seeds")
        ax.plot(tpe.index, _excess(tpe.median(axis=1), optimum), "-", color=color(o), label="TPE, median")
        ax.plot(b.trials, _excess(b.best_so_far, optimum), ":", color="k", lw=1, label="the study")
        ax.plot(b.trials, _excess(b.random_search_expected_best, optimum), "--", color="0.4",
                label="random search (expected, grid)")
        ax.set(xscale="log", yscale="log", title=label(o))
        ax.set_xlabel("trials", fontsize=7)
        rs = d.opt[o]["random_search"]
        notes.append(f"{label(o)}: random search within 5% after {rs['budget_to_within']['0.05'] or '>n'} trials, "
                     f"TPE matches its {d.params.study.n_trials}-trial expectation after "
                     f"{d.opt[o]['samplers']['tpe']['trials_to_match_random_search'] or '>n'} (grid resolution: the "
                     f"half grid's expectation differs by {rs['half_grid_difference_at_budget']:.1e})")
    axes[0].set_ylabel("best - grid optimum (log)")
    axes[-1].legend(fontsize=5)
    fig.tight_layout()
    return fig, (f"Tunability: TPE's best so far over {d.opt[d.optimizers[0]]['samplers']['tpe']['repeats']} sampler "
                 f"seeds (median and range), the study's own run, and the expected best of n random-search trials, "
                 f"computed exactly as n draws from the landscape grid. {'; '.join(notes)}.")


def fig_samplers(d):
    fig, axes = panels(len(d.optimizers), height=2.6, sharey=True)
    notes = []
    for ax, o in zip(axes, d.optimizers):
        optimum = d.opt[o]["grid_optimum"]
        for name, style in SAMPLER_STYLE.items():
            s = d.samplers[(d.samplers.optimizer == o) & (d.samplers.sampler == name)]
            median = s.groupby("trials").best_so_far.median()
            ax.plot(median.index, _excess(median, optimum), style, label=name)
        ax.set(xscale="log", yscale="log", title=f"{label(o)} ({len(d.opt[o]['tuned_hyperparams'])}-D)")
        ax.set_xlabel("trials", fontsize=7)
        regrets = d.opt[o]["samplers"]
        best = min(regrets, key=lambda k: regrets[k]["median_final_regret"])
        notes.append(f"{label(o)}: lowest median regret at n from {best} ({regrets[best]['median_final_regret']:.1e})")
    axes[0].set_ylabel("median regret (log)")
    axes[-1].legend(fontsize=6)
    fig.tight_layout()
    one_d = [label(o) for o in d.optimizers if len(d.opt[o]["tuned_hyperparams"]) == 1]
    fallback = (f" On one-dimensional spaces ({', '.join(one_d)}) Optuna's CMA-ES samples at random." if one_d else "")
    return fig, (f"Optuna's samplers against the grid optimum, median over seeds: TPE, random, Sobol (qmc) and "
                 f"CMA-ES, each with the study's budget and seeds. {'; '.join(notes)}.{fallback}")


