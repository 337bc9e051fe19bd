"""One problem's evaluation: re-run its winners, compare them, and (where the problem can afford
them) map the landscape, race the samplers and run Keras. Writes reports/evaluation/<problem>/*.csv
and returns the problem's part of reports/summary.json (see evaluate's docstring).
"""
import csv
from pathlib import Path
from typing import Optional, TypedDict

import numpy as np

from pipeline.core import engine, fileio, optimizers, problems, quadratic, reference, statistics
from pipeline.core.config import Params
from pipeline.core.data import Dataset
from pipeline.stages.evaluate import across, comparisons, ground_truth, landscape, samplers, scheduled
from pipeline.stages.evaluate.inputs import read_study
from pipeline.stages.evaluate.measures import FinalLoss, examples_to_floor, examples_to_target, lr_ratio, mean_ci, target

DIVERGENCE_RULE = ("a run that diverges (its loss becomes infinite or undefined, or exceeds train.diverge_factor "
                   "times its start) scores the loss at the start of training, its initial loss, in every mean, "
                   "test, resample and curve")

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
    tuned_examples_reached: list  # per evaluation seed, examples seen when the tuned run reached the target (None: never)
    tuned_examples_to_target: dict  # median over the seeds that reached it, seeds_reached, seeds
    effective_lr_ratio: dict  # layer -> median coordinate's effective lr at the end over its value at the first record
    book_examples_to_floor: dict
    defaults_examples_to_floor: dict
    trials: int
    diverged_trials: int
    divergence_penalty: float  # the initial loss on the study's seeds
    study_best: float
    grid_points: Optional[int]  # this and the rest: None where the problem has no dense analyses
    grid_optimum: Optional[float]
    grid_optimum_hyperparams: Optional[dict]
    best_known: dict  # value, hyperparams, source (grid, refinement, study, <name> sampler)
    grid_resolution_gap: float  # grid optimum - best known: an estimate, not a bound
    regret: float  # study best - best known, never negative
    keras_max_abs_diff: Optional[float]  # None where Keras has no such optimizer
    random_search: dict  # comparisons.random_search
    samplers: dict  # samplers.summarise


FLOOR_SOURCES = {"least_squares": "the least-squares minimum (closed form)",
                 "closed_form": "the minimum at theta = the training points' mean (closed form)",
                 "best_known": "the lowest training loss any run of this pipeline recorded (every evaluation run at "
                               "every record, and every study trial's final loss per seed)"}


def _held_out(problem, dataset: Dataset, family_runs: dict, seeds, protocol) -> dict:
    """Where the workload has held-out data: each family's final held-out loss under the divergence
    rule (a diverged run scores the held-out loss of its start)."""
    if not problem.has_split:
        return {}
    n_features = dataset.features.shape[1]
    starts = problem.held_out_metrics(np.stack([problem.initial_params(int(s), n_features, protocol) for s in seeds]))
    out = {}
    for family, r in family_runs.items():
        for metric, values in problem.held_out_metrics(r.params).items():
            out[f"{family}_held_out_{metric}"] = mean_ci(np.where(r.diverged, np.nan, values), starts[metric])
    return out


def evaluate_problem(dataset: Dataset, params: Params, studies_dir: Path, out_dir: Path, tracker=None) -> dict:
    """One problem's part of summary.json; params are config.for_problem's (train is its protocol)."""
    problem, ev = problems.get(params.problem), params.evaluate
    seeds = np.arange(ev.first_seed, ev.first_seed + ev.seeds)
    rows = {name: [] for name in ("curves", "coordinates", "landscape", "budget", "samplers", "quadratic")}
    studies, settings_of, runs, dense, scheduled_runs = {}, {}, {}, {}, {}
    groups_of, parts_of = {}, {}  # optimizer -> its engine groups; -> (own groups, schedule groups, grid points)
    for name in params.study.optimizers:  # one batched engine call per optimizer, schedules included
        opt = optimizers.get(name)
        studies[name] = best, trials = read_study(params.problem, name, studies_dir)
        # An optimizer no framework ships (no `defaults` in the registry) meets its book setting there.
        settings_of[name] = settings = {"tuned": best["hyperparams"], "book": params.book[name],
                                        "defaults": opt.defaults or params.book[name]}
        groups = [(hyper, seeds) for hyper in settings.values()]
        if problem.dense_analyses:
            points, grid_hyper, grid_seeds = landscape.landscape_grid(name, params)
            groups += [(grid_hyper, grid_seeds), ground_truth.with_seeds(ground_truth.uniform_draws(name, params), params)]
        with_schedules = scheduled.groups(name, params, studies_dir, seeds)
        groups_of[name] = groups + list(with_schedules.values())
        parts_of[name] = (len(groups), with_schedules, points if problem.dense_analyses else None)
    trained_by = engine.train_optimizers(dataset, groups_of, params.train, params.problem)
    for name, (n_groups, with_schedules, points) in parts_of.items():
        trained = trained_by[name]
        runs[name] = dict(zip(settings_of[name], trained))
        dense[name] = (points, *trained[3:n_groups]) if problem.dense_analyses else None
        scheduled_runs[name] = {key: (group[0], result) for (key, group), result
                                in zip(with_schedules.items(), trained[n_groups:])}
    floor = problem.closed_floor(dataset) if problem.floor != "best_known" else float(min(
        [np.nanmin(r.losses) for family in runs.values() for r in family.values()]
        + [np.nanmin(r.losses) for family in scheduled_runs.values() for _, r in family.values()]
        + [float(v) for _, trials in studies.values() for t in trials for k, v in t.items()
           if k.startswith("final_loss_seed_") and v]))
    # The divergence penalty on the study's seeds: their loss at the start of training.
    penalty = float(engine.initial_loss(dataset, np.arange(params.study.seeds_per_trial), params.train,
                                        params.problem).mean())
    goal = target(problem, floor, ev.floor_tolerance, {o: r["tuned"].scored() for o, r in runs.items()})
    summary, scores, convergence, eff_mean, start_losses = {}, {}, {}, {}, []
    columns = problem.lr_columns(dataset.features.shape[1])
    for name in params.study.optimizers:
        opt, (best, trials) = optimizers.get(name), studies[name]
        scores[name] = {family: r.scored() for family, r in runs[name].items()}
        start_losses.append(runs[name]["tuned"].initial_loss)
        for family, result in runs[name].items():
            rows["curves"] += _curve_rows(family, name, seeds, result, floor, problem.held_out_names)
            kept = ~result.diverged  # means over the seeds that did not diverge (all, unless one did)
            per_coord = result.effective_lr[kept].mean(axis=0) if kept.any() else result.effective_lr[0] * np.nan
            rows["coordinates"] += [{"family": family, "optimizer": name, "examples": int(x), "coordinate": c,
                                     "effective_lr": float(per_coord[i, j])}
                                    for i, x in enumerate(result.examples) for j, c in enumerate(columns)]
        tuned = runs[name]["tuned"]
        kept = ~tuned.diverged
        convergence[name] = tuned.losses[kept].mean(axis=0) if kept.any() else np.full(len(tuned.examples), np.nan)
        eff_mean[name] = tuned.effective_lr[kept].mean(axis=(0, 2)) if kept.any() else convergence[name]
        trial_values = np.array([float(t["objective"]) if t["objective"] else penalty for t in trials])
        extra = (_dense_analyses(dataset, name, best, tuned, trial_values, dense[name], penalty, floor, params, rows,
                                 tracker)
                 if problem.dense_analyses else dict(_NO_DENSE))
        known = extra.pop("best_known") or ground_truth.best_known([(best["value"], best["hyperparams"], "study")])
        reach = {f: examples_to_floor(r, floor, ev.floor_tolerance) for f, r in runs[name].items()}
        reached = examples_to_target(tuned, goal["value"])
        summary[name] = OptimizerSummary(**{
            **{f"{family}_hyperparams": hyper for family, hyper in settings_of[name].items()},
            **{f"{family}_final_loss": mean_ci(r.final_loss, r.initial_loss) for family, r in runs[name].items()},
            **{f"{family}_diverged_seeds": int(r.diverged.sum()) for family, r in runs[name].items()},
            **{f"{family}_examples_to_floor": _reach_summary(reach[family], len(seeds)) for family in runs[name]},
            "tuned_examples_reached": reached,
            "tuned_examples_to_target": _reach_summary(reached, len(seeds)),
            "effective_lr_ratio": lr_ratio(tuned, problem.rate_layers(columns)),
            "trials": len(trials),
            "diverged_trials": sum(t["diverged"] == "1" for t in trials),
            "divergence_penalty": penalty,
            "study_best": best["value"],
            "best_known": known,
            "regret": best["value"] - known["value"],
            **extra,
            **_held_out(problem, dataset, runs[name], seeds, params.train),
        })
    start = float(np.mean(start_losses))
    margin = ev.equivalence_margin * (start - floor)
    result = {"problem": params.problem, "label": problem.label, "convex": problem.convex,
              "network": problem.kind == "network", "floor_kind": problem.floor,
              "description": problem.description, "protocol": _protocol(params, len(dataset.target)), "floor": floor,
              "floor_source": FLOOR_SOURCES[problem.floor], "target": goal, "seeds": seeds.tolist(), "floor_tolerance": ev.floor_tolerance,
              "divergence_rule": DIVERGENCE_RULE, "initial_loss": start, "dense_analyses": problem.dense_analyses,
              "equivalence_margin": {"fraction": ev.equivalence_margin, "absolute": margin},
              "optimizers": summary, "comparisons": comparisons.paired_comparisons(scores, margin, ev.first_seed)}
    if {"adagrad", "rmsprop"} <= set(scores):
        result["adagrad_vs_rmsprop"] = across.adagrad_against_rmsprop(scores, result["comparisons"]["pairs"], margin)
    result["schedules"], schedule_rows = scheduled.compare_schedules(dataset, params, seeds, runs, scheduled_runs, margin)
    write_csv(out_dir / "schedules.csv", schedule_rows)
    examples = tuned.examples
    for name in ("curves", "coordinates", "landscape", "budget", "samplers", "quadratic"):
        write_csv(out_dir / f"{name}.csv", rows[name])
    # The DVC plots' files, one per problem in a directory per plot, so dvc.yaml names no problem.
    for plot, means in (("convergence", convergence), ("effective_lr", eff_mean)):
        write_csv(out_dir.parent / plot / f"{params.problem}.csv",
                  [{"examples": int(x), **{n: float(c[i]) for n, c in means.items()}} for i, x in enumerate(examples)])
    return result


# What a problem without the dense analyses has in their place.
_NO_DENSE = {"best_known": None, "grid_points": None, "grid_optimum": None, "grid_optimum_hyperparams": None,
             "grid_resolution_gap": None, "keras_max_abs_diff": None, "random_search": None, "samplers": None}


def _protocol(params: Params, n_rows: int) -> dict:
    t = params.train
    return {"batch_size": t.batch_size, "epochs": t.epochs, "record_every": t.record_every,
            "steps": len(engine.timeline(n_rows, t).step_rows)}


def _dense_analyses(dataset, name, best, tuned, trial_values, dense, penalty, floor, params, rows, tracker) -> dict:
    """The landscape grid, its refinement, the sampler race, random search and Keras: the best known
    value and how far each search is from it."""
    opt, ev = optimizers.get(name), params.evaluate
    points, grid_runs, draw_runs = dense
    tuned_seeds = np.arange(ev.first_seed, ev.first_seed + ev.seeds)
    keras_gap = _keras_runs(dataset, name, best["hyperparams"], tuned_seeds, tuned, params, floor, rows["curves"])
    grid_rows = landscape.landscape(name, points, grid_runs, params)
    rows["landscape"] += grid_rows
    grid_best = min(grid_rows, key=lambda r: r["objective"])
    center = min([(grid_best["objective"], {h: grid_best[h] for h in opt.hyperparams}),
                  (best["value"], best["hyperparams"])], key=lambda c: c[0])[1]
    fine = ground_truth.refinement(name, center, params)
    fine_values = ground_truth.objective(engine.train(dataset, name, *ground_truth.with_seeds(fine, params),
                                                      params.train, params.problem), params)
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
    return {"best_known": known, "grid_points": len(grid_rows), "grid_optimum": grid_best["objective"],
            "grid_optimum_hyperparams": {h: grid_best[h] for h in opt.hyperparams},
            # An estimate, not a bound: how far the grid's resolution keeps its optimum from the best known.
            "grid_resolution_gap": grid_best["objective"] - optimum,
            "keras_max_abs_diff": keras_gap, "random_search": random_summary, "samplers": sampler_summary}


def _keras_runs(dataset, name, hyper, seeds, tuned, params, floor, curves: list):
    """Keras's built-in, through the book's eager loop, on the first evaluation seeds: the largest
    loss difference from our engine at any record (None where Keras has no such optimizer)."""
    if optimizers.get(name).keras is None:
        return None
    keras = [reference.train_eager(dataset, params.problem, name, hyper, int(s), params.train, use_keras=True, book_loop=False)
             for s in seeds[: params.evaluate.framework_seeds]]
    for seed, k in zip(seeds, keras):
        curves += _curve_rows("framework", name, [seed], k, floor, ())
    with np.errstate(invalid="ignore"):
        gaps = [np.abs(k.losses[0] - tuned.losses[i]).max() for i, k in enumerate(keras)]
    return float(np.nanmax(gaps)) if np.isfinite(gaps).any() else None


def _curve_rows(family: str, optimizer: str, seeds, result: engine.TrainResult, floor: float, held_out: tuple) -> list:
    """Each seed's loss at each record, and where the workload has held-out data its scores there
    (held_out_loss, held_out_accuracy)."""
    return [{"family": family, "optimizer": optimizer, "seed": int(seed), "examples": int(x), "loss": float(v),
             "excess_loss": float(v - floor), **{f"held_out_{m}": float(h[j]) for j, m in enumerate(held_out)}}
            for seed, losses, held in zip(seeds, result.losses, result.held_out)
            for x, v, h in zip(result.examples, losses, held)]


def _reach_summary(reached: list, n_seeds: int) -> dict:
    hits = [x for x in reached if x is not None]
    return {"median": float(np.median(hits)) if hits else None, "seeds_reached": len(hits), "seeds": n_seeds}


def write_csv(path: Path, rows: list) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))  # every column any row has, in first-seen order
    with fileio.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fields, lineterminator="\n", restval="")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else repr(float(v)) if isinstance(v, (float, np.floating)) else v)
                        for k, v in row.items()})
