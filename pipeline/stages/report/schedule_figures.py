"""What the report shows of chapter 11.11's schedules: the book's figures, each problem's cosine demo
and tuned schedules against tuned constant (figures, a table, and the key finding), all read from
reports/summary.json and the evaluation's CSVs."""
from pipeline.core import schedules
from pipeline.stages.report.figures import ci_cell, ci_name, color, fmt_hyper, fmt_loss, label, panels, plt

TITLE = "Learning-rate schedules"
STYLES = {"constant": "-", "cosine": "--", "warmup_cosine": "-.", "warmup_linear": ":", "multifactor": (0, (5, 1)),
          "factor": (0, (1, 1)), "sqrt": (0, (3, 1, 1, 1))}


def fig_book_schedules(r):
    figures = r.book_schedules
    names = list(dict.fromkeys(figures.schedule))
    fig, axes = panels(len(names), height=2.0, sharex=False)
    for ax, name in zip(axes, names):
        mine = figures[figures.schedule == name]
        ax.plot(mine.t, mine.lr, ".-", lw=1, ms=3)
        ax.set_title(schedules.get(name).label, fontsize=8)
        ax.set_xlabel("update", fontsize=7)
    axes[0].set_ylabel("learning rate")
    fig.tight_layout()
    settings = "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in schedules.get(name).book.items() if k != "steps")
                         for name in names)
    return fig, ("Chapter 11.11's schedules, each as `python -m pipeline schedule <name>` prints it with the book's "
                 f"settings ({settings}). The factor schedule's first value has already decayed, as the book's "
                 "stateful scheduler returns it; multi-factor drops after update 15 and 30, not at them (MXNet's rule).")


def fig_schedules(d):
    """One problem: the book's SGD at a constant rate and with cosine decay, and every tuned schedule
    next to the same optimizer tuned at a constant rate: loss and effective lr (the factor inside it)."""
    s, demo = d.summary["schedules"], d.schedules
    fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(7.5, 2.9))
    for (family, o, schedule), rows in demo.groupby(["family", "optimizer", "schedule"], sort=False):
        if family == "tuned" and o not in s["studies"]:
            continue  # tuned constant only beside a tuned schedule of the same optimizer
        style = dict(color="black" if family == "demo" else color(o), ls=STYLES.get(schedule, "-"), lw=1.2)
        name = f"{'book' if family == 'demo' else 'tuned'} {label(o)}, {schedules.get(schedule).label}"
        loss_ax.plot(rows.examples, rows.loss - d.floor, label=name, **style)
        lr_ax.plot(rows.examples, rows.effective_lr, **style)
    loss_ax.set(yscale="log", xlabel="examples seen", ylabel=f"loss over the {d.floor_name}")
    lr_ax.set(yscale="log", xlabel="examples seen", ylabel="effective lr (mean over coordinates)")
    loss_ax.legend(fontsize=6)
    fig.tight_layout()
    return fig, f"{d.label}: mean over the evaluation seeds. {demo_sentence(d)}"


def demo_sentence(d) -> str:
    demo = d.summary["schedules"]["demo"]
    t = demo["test"]
    settings = ", ".join(f"{k} {v:g}" for k, v in demo["settings"].items())
    return (f"The book's {label(demo['optimizer'])} ({fmt_hyper(demo['hyperparams'])}) ends at "
            f"{fmt_loss(demo['constant_final_loss'])} at a constant rate and at {fmt_loss(demo['scheduled_final_loss'])} "
            f"with {schedules.get(demo['schedule']).label} decay ({settings} of the initial rate at the end); "
            f"cosine - constant {t['estimate']:+.2e} ({ci_name(t)} {t['ci'][0]:+.2e} to {t['ci'][1]:+.2e}, "
            f"Wilcoxon p {t['p']:.3g}): {_verdict(t)}.")


def _verdict(t: dict) -> str:
    return {"better": "the schedule is significantly better", "worse": "the schedule is significantly worse",
            "equivalent": "practically equivalent", "inconclusive": "inconclusive"}[t["verdict"]]


def schedule_finding(d) -> str:
    """One problem's key finding about schedules: which optimizers gain from one and by how much, or
    that none do; with only `constant` studied, the demo says what a schedule does."""
    studies = d.summary["schedules"]["studies"]
    if not studies:
        return f"Schedules: only constant rates were tuned (study.schedules). {demo_sentence(d)}"
    gains = [(o, s, v["test"]) for o, by in studies.items() for s, v in by.items() if v["test"]["verdict"] == "better"]
    losses = [(o, s) for o, by in studies.items() for s, v in by.items() if v["test"]["verdict"] == "worse"]
    tested = sum(len(by) for by in studies.values())
    if gains:
        text = "Schedules: " + "; ".join(
            f"{label(o)} gains from {schedules.get(s).label} ({t['estimate']:+.2e} final loss, {ci_name(t)} "
            f"{t['ci'][0]:+.2e} to {t['ci'][1]:+.2e}, Holm p {t['p_holm']:.3g})" for o, s, t in gains)
    else:
        text = f"Schedules: no optimizer gains significantly from a schedule over its tuned constant rate ({tested} tests"
        text += ", Holm-corrected)"
    if losses:
        text += "; worse with a schedule: " + ", ".join(f"{label(o)} with {schedules.get(s).label}" for o, s in losses)
    return text + "."


def schedule_table(r) -> tuple:
    header = ["problem", "optimizer", "schedule (settings)", "final loss", "constant", "difference (exact 95% CI)",
              "Wilcoxon p", "Holm p", "verdict"]
    rows = []
    for d in r.problems.values():
        demo = d.summary["schedules"]["demo"]
        entries = [(f"book {label(demo['optimizer'])}", demo["schedule"], demo["settings"], demo["scheduled_final_loss"],
                    demo["constant_final_loss"], demo["test"])]
        for o, by in d.summary["schedules"]["studies"].items():
            constant = d.opt[o]["tuned_final_loss"]
            entries += [(f"tuned {label(o)}", s, {k: v for k, v in x["hyperparams"].items()
                                                   if k in schedules.get(s).run_settings},
                         x["final_loss"], constant, x["test"]) for s, x in by.items()]
        rows += [[d.label, who, f"{schedules.get(s).label} ({fmt_hyper(settings)})", fmt_loss(mine), fmt_loss(constant),
                  f"{t['estimate']:+.2e} ({ci_cell(t)})", f"{t['p']:.3g}", f"{t['p_holm']:.3g}",
                  t["verdict"]] for who, s, settings, mine, constant, t in entries]
    return ("Each schedule against a constant rate, paired on the evaluation seeds (difference: schedule - constant, "
            "negative: the schedule is better); the tuned rows are one Holm family per problem", header, rows)


def figures(r) -> list:
    """(name, () -> (figure, caption)) for the section, the book's figures first."""
    return [("book_schedules", lambda: fig_book_schedules(r))] + [
        (f"{p}_schedules", lambda d=d: fig_schedules(d)) for p, d in r.problems.items()]
