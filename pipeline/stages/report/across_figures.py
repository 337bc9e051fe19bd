"""What the report shows across problems (the excess-loss table, the performance profile, the seed's
claim) and a network's per-layer effective learning rate: figures and tables from summary.json."""

from pipeline.stages.report import findings
from pipeline.stages.report.figures import ci_cell, color, label, panels, plt

LAYER_STYLES = ("-", "--", ":", "-.")


def fig_layer_lr(d):
    """A network: per optimizer, each layer's median effective lr and its 10-90% band over the
    layer's coordinates (tuned, mean over seeds)."""
    fig, axes = panels(len(d.optimizers), sharey=True)
    c = d.coords[d.coords.family == "tuned"]
    layers = list(dict.fromkeys(name.split()[0] for name in c.coordinate))
    for ax, o in zip(axes, d.optimizers):
        mine = c[c.optimizer == o]
        for layer, style in zip(layers, LAYER_STYLES * 3):
            band = {q: mine[mine.coordinate == f"{layer} {q}"] for q in ("p10", "median", "p90")}
            ax.plot(band["median"].examples, band["median"].effective_lr, style, color=color(o), lw=1, label=layer)
            ax.fill_between(band["median"].examples, band["p10"].effective_lr.values, band["p90"].effective_lr.values,
                            color=color(o), alpha=0.12)
        ax.set(yscale="log", title=label(o))
        ax.set_xlabel("examples seen", fontsize=7)
    axes[0].set_ylabel("effective lr (median, 10-90% band)")
    axes[-1].legend(fontsize=6, title="layer", title_fontsize=6)
    fig.tight_layout()
    return fig, (f"{d.label}: each layer's effective learning rate, tuned settings, mean over seeds: the median "
                 f"coordinate (line) and the band from the 10% to the 90% quantile of the layer's coordinates. "
                 f"{findings.lr_fall(d)}")


def fig_profile(r):
    profile = r.summary["across"]["performance_profile"]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for o in r.optimizers:
        ax.step(profile["taus"], profile["optimizers"][o]["profile"], where="post", color=color(o),
                label=f"{label(o)} (area {profile['optimizers'][o]['area']:.2f})")
    ax.set(xlabel="tau: steps to the target over the fastest optimizer's on the same problem and seed",
           ylabel="fraction of runs", ylim=(-0.02, 1.02), xlim=(1, 4))
    ax.legend(fontsize=7)
    return fig, findings.profile_sentence(r.summary["across"], r.optimizers)


ACROSS_FIGURES = [("performance_profile", fig_profile)]


def across_tables(r) -> list:
    excess = r.summary["across"]["excess"]
    areas = r.summary["across"]["performance_profile"]["optimizers"]
    header = ["optimizer", *[f"{r.problems[p].label}: excess (rank)" for p in excess], "profile area"]
    rows = [[label(o), *[f"{excess[p][o]['excess']:.2e} +/- {excess[p][o]['ci95']:.1e} ({excess[p][o]['rank']})"
                         if excess[p][o]["ci95"] is not None else f"{excess[p][o]['excess']:.2e} ({excess[p][o]['rank']})"
                         for p in excess], f"{areas[o]['area']:.3f}"] for o in r.optimizers]
    made = [("Tuned final loss over each problem's floor, mean +/- 95% half-width over the evaluation seeds "
             "(rank among the optimizers, 1 = lowest)", header, rows)]
    claim = [(d.label, family, d.summary["adagrad_vs_rmsprop"][family]) for d in r.problems.values()
             if "adagrad_vs_rmsprop" in d.summary for family in ("tuned", "book")]
    if claim:
        made.append(("Adagrad - RMSProp, paired on the evaluation seeds (negative: Adagrad is better)",
                     ["problem", "settings", "Hodges-Lehmann estimate", "exact 95% CI (lower: all the seeds allow)", "Wilcoxon p", "Holm p",
                      "verdict"],
                     [[problem, family, f"{t['estimate']:+.2e}", ci_cell(t),
                       f"{t['p']:.3g}", f"{t['p_holm']:.3g}", t["verdict"]] for problem, family, t in claim]))
    return made


def across_lines(r) -> list:
    lines = [f"Target of the performance profile: {r.summary['across']['target']}. A run that never reaches it "
             f"counts as infinitely slow; tau runs from 1 to 4."]
    claim = findings.seed_claim(r.summary)
    return lines + ([claim] if claim else [])
