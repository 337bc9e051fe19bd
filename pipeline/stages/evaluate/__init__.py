"""`evaluate` stage: per problem, re-run the winners and compare them (problem.py), map the landscape
and race the samplers where the problem can afford it, compare schedules (scheduled.py); then compare
across problems (across.py).

Writes under reports/evaluation/<problem>/:
  curves.csv         family (tuned, book, defaults, framework), optimizer, seed, examples, loss, excess_loss
  coordinates.csv    family, optimizer, examples, coordinate, effective_lr (mean over seeds); on a network the
                     "coordinates" are each layer's 10%, 50% and 90% quantiles (the workload's lr_columns)
  landscape.csv      optimizer, one column per hyperparameter, objective, diverged: a full grid on the study's seeds
  budget.csv         optimizer, trials, best_so_far (the study's TPE), subsample_expected_best (expected best of
                     b of the study's own trials, without replacement), random_search_expected_best (b draws
                     from the search space), regret
  samplers.csv       optimizer, sampler, repeat, trials, best_so_far, regret
  quadratic.csv      optimizer, step, x1, x2, f: the book's 2-D demo
  schedules.csv      family (demo, tuned), optimizer, schedule, examples, mean loss and effective lr (scheduled.py)
(landscape to quadratic are empty for a problem without dense analyses); for `dvc plots`, one file per problem
in reports/evaluation/convergence/<problem>.csv and reports/evaluation/effective_lr/<problem>.csv: examples and
each optimizer's mean tuned loss, and mean tuned effective lr; reports/evaluation/book_schedules.csv
(the book's schedule figures), and reports/summary.json (DVC metrics):
  problems.<problem>: its floor and where it comes from, and per optimizer: settings, final loss mean and 95% CI
    (every seed, a diverged one scoring its initial loss), examples to the floor and to the target, the effective
    lr's fall per layer, trials, regret, Keras difference, random search and the samplers; `comparisons`: the paired tests;
    `adagrad_vs_rmsprop`: the seed's claim, tuned and at the book's settings; `schedules`: the cosine demo
    and each schedule's tuned study against tuned constant (scheduled.py).
  across: per problem and optimizer the tuned excess loss and rank, and the performance profile.
"""
from pathlib import Path

from pipeline.core import config, engine, fileio, problems, reference
from pipeline.core.config import Params
from pipeline.core.data import Dataset
from pipeline.core.paths import EVAL_DIR, SUMMARY
from pipeline.stages.evaluate import across, scheduled
from pipeline.stages.evaluate.problem import evaluate_problem, write_csv
from pipeline.stages.evaluate.inputs import read_study


def evaluate(dataset: Dataset, params: Params, studies_dir: Path, out_dir: Path = EVAL_DIR,
             summary_path: Path = SUMMARY, tracker=None) -> dict:
    if any(problems.get(p).dense_analyses for p in params.study.problems):  # they compare with Keras
        reference.load_keras()  # not in a problem's thread while another's trains
    # The problems side by side: the linear model's evaluation keeps one core busy most of the time
    # (Keras runs, the sampler race, statistics), and a network's training fills the other.
    by_problem = engine.side_by_side(lambda p: evaluate_problem(problems.get(p).data(dataset),
                                                                config.for_problem(params, p), studies_dir,
                                                                Path(out_dir) / p, tracker), params.study.problems)
    result = {"problems": by_problem, "across": across.across(by_problem, list(params.study.optimizers))}
    write_csv(Path(out_dir) / "book_schedules.csv", scheduled.book_figures())
    fileio.write_json(summary_path, result)
    return result


def run(params: Params, tracking_uri: str) -> dict:
    """The stage as `python -m pipeline evaluate` runs it: MLflow's process starts beside it."""
    from pipeline.core import data, paths, tracking

    dataset = data.load_prepared()  # inputs first: bad input opens (and creates) no MLflow store
    for problem in params.study.problems:
        for name in params.study.optimizers:
            for schedule in params.study.schedules:
                read_study(problem, name, paths.STUDIES_DIR, schedule)
    with tracking.Tracker(tracking_uri, params.mlflow.experiment) as tracker:
        return evaluate(dataset, params, paths.STUDIES_DIR, tracker=tracker)
