"""`evaluate` stage: re-run the winners, compare them, map the landscape, race the samplers.

One batched engine call per optimizer: tuned, book, framework-default and landscape runs share its
compilation (landscape.py). Then the comparisons (comparisons.py) and the samplers (samplers.py).
Writes under reports/evaluation/:
  curves.csv         family (tuned, book, defaults, framework), optimizer, seed, examples, loss, excess_loss
  convergence.csv    examples and each optimizer's mean tuned loss (for `dvc plots`)
  effective_lr.csv   examples and each optimizer's mean tuned effective lr (for `dvc plots`)
  coordinates.csv    family, optimizer, examples, coordinate, effective_lr (mean over seeds)
  landscape.csv      optimizer, one column per hyperparameter, objective, diverged: a full grid on the study's seeds
  budget.csv         optimizer, trials, best_so_far (the study's TPE), subsample_expected_best (expected best of
                     b of the study's own trials, without replacement), random_search_expected_best (b draws
                     from the grid), regret
  samplers.csv       optimizer, sampler, repeat, trials, best_so_far, regret
  quadratic.csv      optimizer, step, x1, x2, f: the book's 2-D demo
and reports/summary.json (declared as DVC metrics): per optimizer: settings, final loss mean and 95% CI (over the
  seeds that did not diverge, with their count), examples to the floor, trials, regret, from-scratch vs Keras
  difference (None where Keras has no such optimizer), random search and the samplers; and `comparisons`: the
  paired tests between optimizers and against the book's and the framework's default settings.
"""
import csv
import json
import math
from pathlib import Path
from typing import Optional, TypedDict

import numpy as np
from scipy import stats

from pipeline.core import engine, fileio, optimizers, quadratic, reference, statistics
from pipeline.core.config import Params
from pipeline.core.data import Dataset
from pipeline.core.errors import PipelineError
from pipeline.core.paths import EVAL_DIR, SUMMARY
from pipeline.stages.evaluate import comparisons, ground_truth, landscape, samplers

DIVERGENCE_RULE = ("a run that diverges (its loss becomes infinite or undefined, or exceeds train.diverge_factor "
                   "times its start) scores the loss at the start of training, its initial loss, in every mean, "
                   "test, resample and curve")

CORDS = ("w1", "w2", "w3", "w4", "w5", "b")


class FinalLoss(TypedDict):
    mean: float  # over every seed, a diverged one scoring its initial loss
    ci95: Optional[float]  # t-interval half-width
    diverged_seeds: int
    seeds: int


class OptimizerSummary(TypedDict):
    """One optimizer in summary.json (`optimizers.<name>`); <family> is tuned, book or defaults."""

    tuned_hyperparams: dict
    book_hyperparams: dict
    defaults_hyperparams: dict
    tuned_final_loss: FinalLoss
    book_final_loss: FinalLoss
    defaults_final_loss: FinalLoss
    tuned_diverged_seeds: int
    book_diverged_seeds: int
    defaults_diverged_seeds: int
    tuned_examples_to_floor: dict  # median, seeds_reached, seeds
    book_examples_to_floor: dict
    defaults_examples_to_floor: dict
    trials: int
    diverged_trials: int
    divergence_penalty: float  # the initial loss on the study's seeds
    study_best: float
    grid_points: int
    grid_optimum: float
    grid_optimum_hyperparams: dict
    best_known: dict  # value, hyperparams, source (grid, refinement, study, <name> sampler)
    grid_resolution_gap: float  # grid optimum - best known: an estimate, not a bound
    regret: float  # study best - best known, never negative
    keras_max_abs_diff: Optional[float]  # None where Keras has no such optimizer
    random_search: dict  # comparisons.random_search
    samplers: dict  # samplers.summarise


def read_study(optimizer: str, studies_dir: Path) -> tuple:
    """best.json and trials.csv of one study."""
    folder = Path(studies_dir) / optimizer
    try:
        best = json.loads((folder / "best.json").read_text())
        with open(folder / "trials.csv") as f:
            trials = list(csv.DictReader(f))
    except FileNotFoundError as e:
        raise PipelineError(f"{e.filename} not found: run `dvc repro study@{optimizer}` first") from None
    return best, trials


def examples_to_floor(result: engine.TrainResult, floor: float, tolerance: float) -> list:
    """Per run, the examples seen when the loss first came within `tolerance` of the floor (None: never)."""
    reached = result.losses <= (1 + tolerance) * floor
    return [int(result.examples[np.argmax(r)]) if r.any() else None for r in reached]


def mean_ci(values: np.ndarray, penalty) -> FinalLoss:
    """Mean and 95% t-interval half-width over every seed under the divergence rule (a diverged
    seed scores `penalty`, its initial loss), and how many diverged."""
    values = np.asarray(values, dtype=np.float64)
    scored = statistics.penalized(values, penalty)
    n = len(scored)
    half = float(stats.t.ppf(0.975, n - 1) * scored.std(ddof=1) / math.sqrt(n)) if n >= 2 else None
    return FinalLoss(mean=float(scored.mean()), ci95=half, diverged_seeds=int((~np.isfinite(values)).sum()),
                     seeds=int(n))


def evaluate(dataset: Dataset, params: Params, studies_dir: Path, out_dir: Path = EVAL_DIR,
             summary_path: Path = SUMMARY, tracker=None) -> dict:
    ev, floor = params.evaluate, dataset.stats["least_squares"]["loss"]
    seeds = np.arange(ev.first_seed, ev.first_seed + ev.seeds)
    rows = {name: [] for name in ("curves", "coordinates", "landscape", "budget", "samplers", "quadratic")}
    summary, scores, convergence, eff_mean, start_losses = {}, {}, {}, {}, []
    for name in params.study.optimizers:
        opt = optimizers.get(name)
        best, trials = read_study(name, studies_dir)
        # An optimizer no framework ships (no `defaults` in the registry) meets its book setting there.
        settings = {"tuned": best["hyperparams"], "book": params.book[name], "defaults": opt.defaults or opt.book}
        points, grid_hyper, grid_seeds = landscape.landscape_grid(name, params)
        draws = ground_truth.uniform_draws(name, params)
        *trained, grid_runs, draw_runs = engine.train_groups(
            dataset, name, [(hyper, seeds) for hyper in settings.values()]
            + [(grid_hyper, grid_seeds), ground_truth.with_seeds(draws, params)], params.train)
        runs = dict(zip(settings, trained))
        scores[name] = {family: r.scored() for family, r in runs.items()}
        start_losses.append(runs["tuned"].initial_loss)
        for family, result in runs.items():
            rows["curves"] += _curve_rows(family, name, seeds, result, floor)
            kept = ~result.diverged  # means over the seeds that did not diverge (all, unless one did)
            per_coord = result.effective_lr[kept].mean(axis=0) if kept.any() else result.effective_lr[0] * np.nan
            rows["coordinates"] += [{"family": family, "optimizer": name, "examples": int(x), "coordinate": c,
                                     "effective_lr": float(per_coord[i, j])}
                                    for i, x in enumerate(result.examples) for j, c in enumerate(CORDS)]
        tuned = runs["tuned"]
        kept = ~tuned.diverged
        convergence[name] = tuned.losses[kept].mean(axis=0) if kept.any() else np.full(len(tuned.examples), np.nan)
        eff_mean[name] = tuned.effective_lr[kept].mean(axis=(0, 2)) if kept.any() else convergence[name]
        keras_gap = _keras_runs(dataset, name, best["hyperparams"], seeds, tuned, params, floor, rows["curves"])

        # The divergence penalty on the study's seeds: their loss at the start of training.
        penalty = float(grid_runs.initial_loss[: params.study.seeds_per_trial].mean())
        grid_rows = landscape.landscape(name, points, grid_runs, params)
        rows["landscape"] += grid_rows
        grid_best = min(grid_rows, key=lambda r: r["objective"])
        trial_values = np.array([float(t["objective"]) if t["objective"] else penalty for t in trials])
        center = min([(grid_best["objective"], {h: grid_best[h] for h in opt.hyperparams}),
                      (best["value"], best["hyperparams"])], key=lambda c: c[0])[1]
        fine = ground_truth.refinement(name, center, params)
        fine_values = ground_truth.objective(engine.train(dataset, name, *ground_truth.with_seeds(fine, params),
                                                          params.train), params)
        sampler_rows = samplers.compare(dataset, name, params, penalty)
        rows["samplers"] += sampler_rows
        i = int(np.argmin(fine_values))
        known = ground_truth.best_known(
            [(grid_best["objective"], {h: grid_best[h] for h in opt.hyperparams}, "grid"),
             (fine_values[i], {h: v[i] for h, v in fine.items()}, "refinement"),
             (best["value"], best["hyperparams"], "study")]
            + [(r["best_so_far"], r["hyperparams"], f"{r['sampler']} sampler") for r in sampler_rows])
        optimum = known["value"]
        for r in sampler_rows:
            r["regret"] = r["best_so_far"] - optimum
            del r["hyperparams"]
        random_curve, random_summary = comparisons.random_search(
            ground_truth.objective(draw_runs, params), params.study.n_trials, optimum, floor, penalty,
            params.study.seed, name)
        budget = landscape.budget_curve(trial_values, optimum)
        rows["budget"] += [{"optimizer": name, **row, "random_search_expected_best": float(v)}
                           for row, v in zip(budget, random_curve)]
        sampler_summary = samplers.summarise(sampler_rows, random_curve, params.study.n_trials)
        study_curve = np.array([r["best_so_far"] for r in budget])
        random_summary["study_trials_to_match"] = statistics.budget_to_reach(study_curve, random_curve[-1])
        if tracker is not None:
            samplers.log_runs(tracker, name, sampler_rows, sampler_summary, params)

        path = quadratic.trace(name, ev.quadratic[name], ev.quadratic_steps)
        rows["quadratic"] += [{"optimizer": name, "step": i, "x1": x[0], "x2": x[1], "f": float(quadratic.f(x))}
                              for i, x in enumerate(path)]
        reach = {f: examples_to_floor(r, floor, ev.floor_tolerance) for f, r in runs.items()}
        summary[name] = OptimizerSummary(**{
            **{f"{family}_hyperparams": hyper for family, hyper in settings.items()},
            **{f"{family}_final_loss": mean_ci(r.final_loss, r.initial_loss) for family, r in runs.items()},
            **{f"{family}_diverged_seeds": int(r.diverged.sum()) for family, r in runs.items()},
            **{f"{family}_examples_to_floor": _reach_summary(reach[family], len(seeds)) for family in runs},
            "trials": len(trials),
            "diverged_trials": sum(t["diverged"] == "1" for t in trials),
            "divergence_penalty": penalty,
            "study_best": best["value"],
            "grid_points": len(grid_rows),
            "grid_optimum": grid_best["objective"],
            "grid_optimum_hyperparams": {h: grid_best[h] for h in opt.hyperparams},
            "best_known": known,
            # An estimate, not a bound: how far the grid's resolution keeps its optimum from the best known.
            "grid_resolution_gap": grid_best["objective"] - optimum,
            "regret": best["value"] - optimum,
            "keras_max_abs_diff": keras_gap,
            "random_search": random_summary,
            "samplers": sampler_summary,
        })
    start = float(np.mean(start_losses))
    margin = ev.equivalence_margin * (start - floor)
    result = {"floor": floor, "seeds": seeds.tolist(), "floor_tolerance": ev.floor_tolerance,
              "divergence_rule": DIVERGENCE_RULE, "initial_loss": start,
              "equivalence_margin": {"fraction": ev.equivalence_margin, "absolute": margin},
              "optimizers": summary, "comparisons": comparisons.paired_comparisons(scores, margin, ev.first_seed)}
    examples = tuned.examples
    for name in ("curves", "coordinates", "landscape", "budget", "samplers", "quadratic"):
        _write_csv(out_dir / f"{name}.csv", rows[name])
    _write_csv(out_dir / "convergence.csv", [{"examples": int(x), **{n: float(c[i]) for n, c in convergence.items()}}
                                             for i, x in enumerate(examples)])
    _write_csv(out_dir / "effective_lr.csv", [{"examples": int(x), **{n: float(c[i]) for n, c in eff_mean.items()}}
                                              for i, x in enumerate(examples)])
    fileio.write_json(summary_path, result)
    return result


def run(params: Params, tracking_uri: str) -> dict:
    """The stage as `python -m pipeline evaluate` runs it: MLflow's process starts beside it."""
    from pipeline.core import data, paths, tracking

    dataset = data.load_prepared()  # inputs first: bad input opens (and creates) no MLflow store
    for name in params.study.optimizers:
        read_study(name, paths.STUDIES_DIR)
    with tracking.Tracker(tracking_uri, params.mlflow.experiment) as tracker:
        return evaluate(dataset, params, paths.STUDIES_DIR, tracker=tracker)


def _keras_runs(dataset, name, hyper, seeds, tuned, params, floor, curves: list):
    """Keras's built-in, through the book's eager loop, on the first evaluation seeds: the largest
    loss difference from our engine at any record (None where Keras has no such optimizer)."""
    if optimizers.get(name).keras is None:
        return None
    keras = [reference.train_eager(dataset, name, hyper, int(s), params.train, use_keras=True, book_loop=False)
             for s in seeds[: params.evaluate.framework_seeds]]
    for seed, k in zip(seeds, keras):
        curves += _curve_rows("framework", name, [seed], k, floor)
    with np.errstate(invalid="ignore"):
        gaps = [np.abs(k.losses[0] - tuned.losses[i]).max() for i, k in enumerate(keras)]
    return float(np.nanmax(gaps)) if np.isfinite(gaps).any() else None


def _curve_rows(family: str, optimizer: str, seeds, result: engine.TrainResult, floor: float) -> list:
    return [{"family": family, "optimizer": optimizer, "seed": int(seed), "examples": int(x), "loss": float(v),
             "excess_loss": float(v - floor)}
            for seed, losses in zip(seeds, result.losses) for x, v in zip(result.examples, losses)]


def _reach_summary(reached: list, n_seeds: int) -> dict:
    hits = [x for x in reached if x is not None]
    return {"median": float(np.median(hits)) if hits else None, "seeds_reached": len(hits), "seeds": n_seeds}


def _write_csv(path: Path, rows: list) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))  # every column any row has, in first-seen order
    with fileio.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fields, lineterminator="\n", restval="")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else repr(float(v)) if isinstance(v, (float, np.floating)) else v)
                        for k, v in row.items()})
