"""Chapter 11.11 in the evaluation, per problem: each optimizer tuned with each schedule of
study.schedules against the same optimizer tuned at a constant rate, paired on the evaluation seeds
(one Holm family per problem); and always, whatever study.schedules says, the demo: the book's
setting of SGD at a constant rate against the same with cosine decay (to the registry's default
final fraction), so every report shows what a schedule does on this data.

Writes reports/evaluation/<problem>/schedules.csv: family (demo, tuned), optimizer, schedule, examples,
loss and effective_lr (means over the evaluation seeds; the effective lr, the schedule's factor
included, also over coordinates or layer quantiles); and the book's figures, book_schedules.csv.
"""
from pathlib import Path

import numpy as np

from pipeline.core import engine, schedules
from pipeline.core import statistics as st
from pipeline.core.config import Params
from pipeline.stages.evaluate.comparisons import holm_family
from pipeline.stages.evaluate.inputs import read_study
from pipeline.stages.evaluate.measures import mean_ci

DEMO = ("sgd", "cosine")  # the book's SGD, at a constant rate and with cosine decay


def _curves(family: str, optimizer: str, schedule: str, result: engine.TrainResult) -> list:
    kept = ~result.diverged if (~result.diverged).any() else np.ones(len(result.diverged), bool)
    loss, eff = result.losses[kept].mean(axis=0), result.effective_lr[kept].mean(axis=(0, 2))
    return [{"family": family, "optimizer": optimizer, "schedule": schedule, "examples": int(x),
             "loss": float(v), "effective_lr": float(e)} for x, v, e in zip(result.examples, loss, eff)]


def _demo_setting(params: Params) -> tuple:
    name, schedule = DEMO
    book = params.book[name]  # config requires it: the demo always runs
    return book, {s: schedules.RUN_SETTINGS[s].default for s in schedules.get(schedule).run_settings}


def groups(optimizer: str, params: Params, studies_dir: Path, seeds) -> dict:
    """The engine groups (hyper, seeds, schedule) this optimizer adds to its evaluation call: each
    tuned schedule other than constant, and the cosine demo if it is the demo's optimizer (its
    constant half is the book setting the evaluation runs anyway)."""
    out = {}
    for schedule in [s for s in params.study.schedules if s != "constant"]:
        best, _ = read_study(params.problem, optimizer, studies_dir, schedule)
        out[schedule] = (best["hyperparams"], seeds, schedule)
    if optimizer == DEMO[0]:
        book, setting = _demo_setting(params)
        out["demo"] = ({**book, **setting}, seeds, DEMO[1])
    return out


def compare_schedules(dataset, params: Params, seeds, runs: dict, scheduled_runs: dict, margin: float) -> tuple:
    """(summary.json's `schedules` for this problem, schedules.csv's rows). runs: optimizer -> family
    (tuned, book, ...) -> TrainResult at a constant rate on `seeds`; scheduled_runs: optimizer ->
    schedule (and "demo") -> (hyperparameters, TrainResult), from `groups`. Each test is scheduled - constant, seed by
    seed (negative: the schedule is better)."""
    name, schedule = DEMO
    book, setting = _demo_setting(params)
    if name in runs:
        constant, cosine = runs[name]["book"], scheduled_runs[name]["demo"][1]
    else:  # the demo's optimizer is not studied: train both halves here
        constant, cosine = engine.train_groups(dataset, name, [(book, seeds), ({**book, **setting}, seeds, schedule)],
                                               params.train, params.problem)
    demo_test = holm_family("the book's SGD, cosine vs constant",
                            {"demo": st.paired(cosine.scored(), constant.scored())}, margin)["demo"]
    rows = _curves("demo", name, "constant", constant) + _curves("demo", name, schedule, cosine)
    studied, tests = {}, {}
    for opt, by_schedule in scheduled_runs.items():
        for other, (hyper, run) in by_schedule.items():
            if other == "demo":
                continue
            rows += _curves("tuned", opt, other, run)
            tests[f"{opt}_{other}"] = st.paired(run.scored(), runs[opt]["tuned"].scored())
            studied.setdefault(opt, {})[other] = {"hyperparams": hyper,
                                                   "final_loss": mean_ci(run.final_loss, run.initial_loss),
                                                   "test": tests[f"{opt}_{other}"]}
    holm_family("each schedule vs constant, tuned", tests, margin)  # updates the tests in `studied` in place
    for opt in runs:
        rows += _curves("tuned", opt, "constant", runs[opt]["tuned"])
    summary = {"demo": {"optimizer": name, "hyperparams": book, "schedule": schedule, "settings": setting,
                        "constant_final_loss": mean_ci(constant.final_loss, constant.initial_loss),
                        "scheduled_final_loss": mean_ci(cosine.final_loss, cosine.initial_loss), "test": demo_test},
               "studies": studied}
    return summary, rows


def book_figures() -> list:
    """Every schedule's book figure (its `schedule` command's default values): schedule, t, lr."""
    return [{"schedule": s.name, "t": t, "lr": float(v)}
            for s in schedules.SCHEDULES.values()
            for t, v in enumerate(schedules.values(s.name, s.book["steps"], s.book["base_lr"],
                                                   {k: v for k, v in s.book.items() if k not in ("steps", "base_lr")}))]
