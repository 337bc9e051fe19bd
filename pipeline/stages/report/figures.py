"""The report's figures, each a function of the report's inputs returning (figure, caption) or None.

Every number in a caption is read from this run's evaluation and studies. Figures follow the
registry: any optimizer, any number of hyperparameters; panels wrap at four to a row.
"""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.core import optimizers, quadratic  # noqa: E402

plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
                     "pdf.fonttype": 42})  # 42: real text in the PDF, so it can be searched and extracted
PANELS_PER_ROW = 4


def label(o: str) -> str:
    return optimizers.get(o).label


def color(o: str) -> str:
    return optimizers.get(o).color


def fmt_hyper(h: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in h.items())


def fmt_loss(stat: dict, digits: int = 5) -> str:
    """mean +/- half-width over every seed (a diverged one scoring its initial loss), and how many diverged."""
    text = f"{stat['mean']:.{digits}f}" + (f" +/- {stat['ci95']:.{digits}f}" if stat["ci95"] is not None else "")
    if stat["diverged_seeds"] == stat["seeds"]:
        return f"{text} (all {stat['seeds']} seeds diverged)"
    return text + (f" ({stat['diverged_seeds']} of {stat['seeds']} seeds diverged)" if stat["diverged_seeds"] else "")


def ci_name(t: dict) -> str:
    """The exact interval's name: 95%, or the level it reaches when the seeds are too few for 95%."""
    return "95% CI" if t.get("ci_level", 0.95) >= 0.95 else f"{t['ci_level']:.1%} CI, the widest {t['seeds']} seeds allow"


def ci_cell(t: dict) -> str:
    level = "" if t.get("ci_level", 0.95) >= 0.95 else f" ({t['ci_level']:.1%})"
    return f"{t['ci'][0]:+.2e} to {t['ci'][1]:+.2e}{level}"


def panels(n: int, height: float = 2.6, **kwargs):
    """A grid of n panels, four to a row; unused panels hidden."""
    cols = min(n, PANELS_PER_ROW)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.5, height * rows + 0.4), squeeze=False, **kwargs)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _tuned_and_book(d, ax, column: str, lowest=None) -> None:
    """Per optimizer, the mean over seeds of the tuned (solid, with a min-max band) and book
    (dashed) curves of one column of curves.csv."""
    for o in d.optimizers:
        for family, style in (("tuned", "-"), ("book", "--")):
            c = d.curves[(d.curves.optimizer == o) & (d.curves.family == family)]
            g = c.groupby("examples")[column]
            ax.plot(g.mean().index, g.mean(), style, color=color(o), label=f"{label(o)} {family}")
            if family == "tuned":
                ax.fill_between(g.min().index, g.min().clip(lower=lowest), g.max(), color=color(o), alpha=0.15)


def fig_convergence(d):
    fig, ax = plt.subplots(figsize=(7, 3.6))
    _tuned_and_book(d, ax, "loss")
    ax.axhline(d.floor, color="k", lw=0.8, ls=":", label=d.floor_name)
    ax.set(xlabel="examples seen", ylabel="training loss (mean of (y_hat - y)^2 / 2)",
           ylim=(d.floor - 0.005, min(0.5, ax.get_ylim()[1])))
    ax.legend(ncol=2 if len(d.optimizers) <= 4 else 3, fontsize=6)
    finals = "; ".join(f"{label(o)} {fmt_loss(d.opt[o]['tuned_final_loss'], 4)} (book "
                       f"{fmt_loss(d.opt[o]['book_final_loss'], 4)})" for o in d.optimizers)
    return fig, (f"Loss over training, tuned (solid, band = min to max over {len(d.summary['seeds'])} seeds) and "
                 f"book settings (dashed). Final losses, mean over the seeds that did not diverge: {finals}; "
                 f"{d.floor_name} {d.floor:.4f}.")


def fig_excess(d):
    fig, ax = plt.subplots(figsize=(7, 3.6))
    _tuned_and_book(d, ax, "excess_loss", lowest=1e-9)  # a band reaching 0 has no log
    ax.set_yscale("log")
    ax.set(xlabel="examples seen", ylabel="excess loss over the floor (log scale)")
    ax.legend(ncol=2 if len(d.optimizers) <= 4 else 3, fontsize=6)
    ex = "; ".join(f"{label(o)} {d.opt[o]['tuned_final_loss']['mean'] - d.floor:.2e}" for o in d.optimizers
                   if d.opt[o]["tuned_final_loss"]["mean"] is not None)
    return fig, f"Excess loss over the {d.floor_name} {d.floor:.4f}, log scale. Final excess (tuned, mean): {ex}."


def effective_lr_story(d, o: str, family: str) -> str:
    """One optimizer's effective-lr numbers, in words: first and last rate, and the second half."""
    c = d.coords[(d.coords.optimizer == o) & (d.coords.family == family)]
    mean = c.groupby("examples").effective_lr.mean()
    if mean.isna().all():
        return f"{label(o)}: every seed diverged"
    half = mean[mean.index >= mean.index.max() / 2]
    hyper = d.opt[o][f"{family}_hyperparams"]
    memory = "".join(f", {h} {v:.3g} remembers {1 / (1 - v):.0f} steps" for h, v in hyper.items()
                     if optimizers.hyperparameter(h).kind == "decay")
    return (f"{label(o)} ({fmt_hyper(hyper)}{memory}): {mean.iloc[0]:.3g} after {mean.index[0]} examples, "
            f"{mean.iloc[-1]:.3g} at the end (x{mean.iloc[-1] / mean.iloc[0]:.2f}; second half "
            f"x{half.iloc[-1] / half.iloc[0]:.2f})")


def fig_effective_lr(d):
    fig, axes = panels(len(d.optimizers), sharey=True)
    for ax, o in zip(axes, d.optimizers):
        for family, style in (("tuned", "-"), ("book", ":")):
            c = d.coords[(d.coords.optimizer == o) & (d.coords.family == family)]
            for i, (coord, g) in enumerate(c.groupby("coordinate", sort=False)):
                ax.plot(g.examples, g.effective_lr, style, color=f"C{i}", lw=1,
                        label=coord if family == "tuned" else None)
        ax.set_yscale("log")
        ax.set_title(label(o), fontsize=8)
        ax.set_xlabel("examples seen", fontsize=7)
    axes[0].set_ylabel("effective lr per coordinate")
    axes[-1].legend(fontsize=5, title="coordinate", title_fontsize=5)
    fig.tight_layout()
    steps = d.params.train.epochs * -(-d.stats["rows"] // d.params.train.batch_size)
    stories = "; ".join(effective_lr_story(d, o, "tuned") for o in d.optimizers)
    notes = " ".join(f"{label(o)}'s is {optimizers.get(o).note}." for o in d.optimizers if optimizers.get(o).note)
    return fig, (f"Per-coordinate effective learning rate, the factor each optimizer multiplies a gradient by, "
                 f"read from its state (mean over seeds; tuned solid, book dotted), over {steps} steps. Tuned: "
                 f"{stories}. {notes}")


def fig_decay_weights(d):
    fig, ax = plt.subplots(figsize=(7, 3.2))
    t = np.arange(0, 121)
    for gamma in (0.5, 0.9, 0.95, 0.99):
        line, = ax.plot(t, (1 - gamma) * gamma ** t, label=f"decay {gamma} (memory {1 / (1 - gamma):.0f} steps)")
        if 1 / (1 - gamma) <= t[-1]:
            ax.axvline(1 / (1 - gamma), color=line.get_color(), ls=":", lw=1)
    ax.set(xlabel="steps into the past, t", ylabel="weight (1 - decay) decay^t", yscale="log", ylim=(1e-6, 1))
    ax.legend(fontsize=7)
    tuned = [f"{label(o)} {h} {v:.4f} ({1 / (1 - v):.0f} steps)" for o in d.optimizers
             for h, v in d.opt[o]["tuned_hyperparams"].items() if optimizers.hyperparameter(h).kind == "decay"]
    found = f" Tuned decays and their memories: {'; '.join(tuned)}." if tuned else ""
    return fig, (f"Weights a leaky average (RMSProp's gamma, momentum's beta, Adam's beta1 and beta2, Adadelta's "
                 f"rho) gives past values; dotted lines mark the memory 1/(1 - decay).{found}")


def fig_quadratic(d):
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x1, x2 = np.meshgrid(np.linspace(-5.5, 1.5, 200), np.linspace(-3.0, 1.5, 200))
    ax.contour(x1, x2, quadratic.f(np.stack([x1, x2], axis=-1)), levels=20, colors="0.75", linewidths=0.6)
    ends = []
    for o in d.optimizers:
        q = d.quad[d.quad.optimizer == o]
        ax.plot(q.x1, q.x2, "-o", ms=2.5, color=color(o), label=f"{label(o)} ({fmt_hyper(d.params.evaluate.quadratic[o])})")
        ends.append(f"{label(o)} ({q.x1.iloc[-1]:.4f}, {q.x2.iloc[-1]:.4f})")
    ax.set(xlabel="x1", ylabel="x2", aspect="equal")
    ax.legend(fontsize=6, loc="lower right")
    return fig, (f"{d.params.evaluate.quadratic_steps} steps on f = 0.1 x1^2 + 2 x2^2 from (-5, -2). "
                 f"End points: {'; '.join(ends)}.")


def fig_history(d):
    fig, axes = panels(len(d.optimizers), height=2.4, sharey=True)
    notes = []
    for ax, o in zip(axes, d.optimizers):
        t = d.trials[o]
        ok = t[t.diverged == 0]
        ax.plot(ok.number, ok.objective - d.floor, ".", color=color(o), ms=4, label="trial")
        ax.plot(t.number, t.objective.fillna(np.inf).cummin() - d.floor, "k-", lw=1, label="best so far")
        if (t.diverged == 1).any():
            ax.plot(t.number[t.diverged == 1], np.full((t.diverged == 1).sum(), ok.objective.max() - d.floor), "rx",
                    ms=4, label="diverged")
        ax.set(title=label(o), xlabel="trial", yscale="log")
        notes.append(f"{label(o)} best {d.opt[o]['study_best']:.5f} after {d.opt[o]['trials']} trials "
                     f"({d.opt[o]['diverged_trials']} diverged)")
    axes[0].set_ylabel("objective - floor (log)")
    axes[-1].legend(fontsize=6)
    fig.tight_layout()
    return fig, f"Optimization history of each study: {'; '.join(notes)}."


def _axis(d, h: str, values):
    """A hyperparameter as plotted: on its sampling scale (log1m as 1 - value, on a log axis)."""
    r = d.params.study.search_space[h]
    if r.scale == "log1m":
        return 1 - np.asarray(values), f"1 - {h}", "log"
    return np.asarray(values), h, "log" if r.scale == "log" else "linear"


def fig_landscape(d):
    """Each optimizer with two or more hyperparameters: the objective over its first two, the
    rest at their best value on the grid (the minimum over them)."""
    shown = [o for o in d.optimizers if len(optimizers.get(o).hyperparams) >= 2]
    if not shown:
        return None
    fig, axes = panels(len(shown), height=2.8)
    notes = []
    for ax, o in zip(axes, shown):
        a, b = optimizers.get(o).hyperparams[:2]
        land = d.landscape[d.landscape.optimizer == o]
        land = land.assign(objective=land.objective.where(land.diverged == 0))  # diverged: blank, not its penalty
        z = land.pivot_table(index=b, columns=a, values="objective", aggfunc="min", dropna=False)
        xa, xlabel, xscale = _axis(d, a, z.columns)
        yb, ylabel, yscale = _axis(d, b, z.index)
        mesh = ax.pcolormesh(xa, yb, np.log10(z.values - d.floor), shading="nearest", cmap="viridis")
        t = d.trials[o]
        ax.plot(_axis(d, a, t[a])[0], _axis(d, b, t[b])[0], "w.", ms=2)
        best, grid_best = d.opt[o]["tuned_hyperparams"], d.opt[o]["grid_optimum_hyperparams"]
        ax.plot(_axis(d, a, [best[a]])[0], _axis(d, b, [best[b]])[0], "r*", ms=9)
        if grid_best:
            ax.plot(_axis(d, a, [grid_best[a]])[0], _axis(d, b, [grid_best[b]])[0], "kP", ms=7)
        ax.set(xscale=xscale, yscale=yscale, title=label(o))
        ax.set_xlabel(xlabel, fontsize=7)
        ax.set_ylabel(ylabel, fontsize=7)
        fig.colorbar(mesh, ax=ax)
        known = d.opt[o]["best_known"]
        notes.append(f"{label(o)}: {d.opt[o]['grid_points']} grid points, study best {fmt_hyper(best)}, grid optimum "
                     f"{fmt_hyper(grid_best or {})}, best known {known['value']:.6f} (from the {known['source']}; "
                     f"the grid optimum lies {d.opt[o]['grid_resolution_gap']:.1e} above it, an estimate of how far "
                     f"the grid's resolution limits it), study regret {d.opt[o]['regret']:.2e}")
    fig.tight_layout()
    return fig, (f"log10(objective - floor) over each optimizer's first two hyperparameters on the landscape grid "
                 f"(a third is set to its best grid value at each point; blank = diverged), with the study's trials "
                 f"(white), its best (red star) and the grid optimum (black cross). {'; '.join(notes)}.")


def fig_sensitivity(d):
    """Each hyperparameter name: the objective against it, minimised over the others."""
    names = list(dict.fromkeys(h for o in d.optimizers for h in optimizers.get(o).hyperparams))
    fig, axes = panels(len(names), height=2.8, sharey=True)
    spans = []
    for ax, h in zip(axes, names):
        for o in [o for o in d.optimizers if h in optimizers.get(o).hyperparams]:
            land = d.landscape[d.landscape.optimizer == o]
            curve = land.groupby(h).objective.min()
            x, xlabel, xscale = _axis(d, h, curve.index)
            ax.plot(x, curve - d.floor, color=color(o), label=label(o))
            t = d.trials[o]
            ax.plot(_axis(d, h, t[h])[0], t.objective - d.floor, ".", color=color(o), ms=2, alpha=0.6)
            good = curve[curve <= d.floor + 2 * (curve.min() - d.floor)]
            spans.append(f"{label(o)} {h} {good.index.min():.3g} to {good.index.max():.3g}")
        ax.set(xscale=xscale, yscale="log")
        ax.set_xlabel(xlabel, fontsize=7)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("objective - floor (log)")
    fig.tight_layout()
    return fig, (f"Sensitivity to each hyperparameter: the grid's objective minimised over the other hyperparameters "
                 f"(lines) and the study's trials (dots). Values within twice the best excess loss: {'; '.join(spans)}.")


def fig_framework(d):
    shown = [o for o in d.optimizers if d.opt[o]["keras_max_abs_diff"] is not None]
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for o in shown:
        k = d.curves[(d.curves.optimizer == o) & (d.curves.family == "framework")]
        ours = d.curves[(d.curves.optimizer == o) & (d.curves.family == "tuned") & d.curves.seed.isin(k.seed.unique())]
        ax.plot(ours.groupby("examples").loss.mean(), "-", color=color(o), label=f"{label(o)} from scratch")
        ax.plot(k.groupby("examples").loss.mean(), "o", mfc="none", color=color(o), label=f"{label(o)} Keras")
    ax.set(xlabel="examples seen", ylabel="training loss", ylim=(d.floor - 0.005, 0.5))
    ax.legend(fontsize=6, ncol=2)
    gaps = "; ".join(f"{label(o)} {d.opt[o]['keras_max_abs_diff']:.1e}" for o in shown)
    missing = [label(o) for o in d.optimizers if o not in shown]
    absent = f" Keras has no built-in for {', '.join(missing)}; the tests hold it against NumPy." if missing else ""
    return fig, (f"Tuned settings trained by our engine (lines) and by tf.keras.optimizers through the book's eager "
                 f"loop (circles), same seeds, {d.params.evaluate.framework_seeds} of them. Largest loss difference at "
                 f"any record: {gaps}.{absent}")
