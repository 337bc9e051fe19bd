"""`evaluate` stage: re-run the winners, compare with the book and Keras, map the landscape.

One batched engine call per optimizer: tuned, book and landscape runs share its compilation. Writes under reports/evaluation/:
  curves.csv         family (tuned, book, framework), optimizer, seed, examples, loss, excess_loss
  convergence.csv    examples and each optimizer's mean tuned loss (for `dvc plots`)
  effective_lr.csv   examples and each optimizer's mean tuned effective lr (for `dvc plots`)
  coordinates.csv    family, optimizer, examples, coordinate, effective_lr (mean over seeds)
  landscape.csv      optimizer, one column per hyperparameter, objective, diverged: a full grid on the study's seeds
  budget.csv         optimizer, trials, best_so_far, expected_best, regret
  quadratic.csv      optimizer, step, x1, x2, f: the book's 2-D demo
and reports/summary.json (declared as DVC metrics): per optimizer: settings, final loss mean and 95% CI (over the
                     seeds that did not diverge, with their count), examples to the floor, trials, regret,
                     from-scratch vs Keras difference (None where Keras has no such optimizer)
"""
import csv
import json
import math
from pathlib import Path

import numpy as np
from scipy import special, stats

from pipeline.core import engine, fileio, optimizers, quadratic, reference
from pipeline.core.config import Params, Range
from pipeline.core.data import Dataset
from pipeline.core.errors import PipelineError
from pipeline.core.paths import EVAL_DIR, SUMMARY

CORDS = ("w1", "w2", "w3", "w4", "w5", "b")


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


def mean_ci(values: np.ndarray) -> dict:
    """Mean and 95% t-interval half-width over the seeds that did not diverge, and how many did:
    a diverged seed is reported as a count, never as a NaN summary."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    n = len(finite)
    mean = float(finite.mean()) if n else None
    half = float(stats.t.ppf(0.975, n - 1) * finite.std(ddof=1) / math.sqrt(n)) if n >= 2 else None
    return {"mean": mean, "ci95": half, "diverged_seeds": int(len(values) - n), "seeds": int(len(values))}


def grid(r: Range, n: int) -> np.ndarray:
    """n points spanning a search range on the scale it is sampled on."""
    if r.scale == "log":
        return np.geomspace(r.low, r.high, n)
    if r.scale == "log1m":
        return 1.0 - np.geomspace(1.0 - r.low, 1.0 - r.high, n)
    return np.linspace(r.low, r.high, n)


def grid_side(dimensions: int, ev) -> int:
    """Points per axis of the landscape grid for a search space of that many hyperparameters."""
    return {1: ev.lr_points, 2: ev.grid_points}.get(dimensions, ev.cube_points)


def landscape_grid(optimizer: str, params: Params) -> tuple:
    """The study's search space as a full grid, evenly spaced on each hyperparameter's sampling
    scale, each point repeated over the study's seeds:
    (points {hyperparameter: (k,)}, hyper {hyperparameter: (k * s,)}, seeds (k * s,))."""
    space = params.study.search_space
    names = optimizers.get(optimizer).hyperparams
    side = grid_side(len(names), params.evaluate)
    axes = np.meshgrid(*[grid(space[h], side) for h in names], indexing="ij")
    points = {h: a.reshape(-1) for h, a in zip(names, axes)}
    seeds = np.arange(params.study.seeds_per_trial)
    k = side ** len(names)
    return points, {h: np.repeat(v, len(seeds)) for h, v in points.items()}, np.tile(seeds, k)


def landscape(optimizer: str, points: dict, result: engine.TrainResult, params: Params) -> list:
    """The study's objective at each grid point, from the runs of landscape_grid: its minimum is
    ground truth for the study."""
    k = len(next(iter(points.values())))
    score = result.score(params.study.objective).reshape(k, -1)
    diverged = result.diverged.reshape(k, -1).any(axis=1)
    value = np.where(diverged, np.nan, score.mean(axis=1))
    return [{"optimizer": optimizer, **{h: v[i] for h, v in points.items()}, "objective": value[i],
             "diverged": int(diverged[i])} for i in range(k)]


def expected_best_without_replacement(values: np.ndarray, budgets) -> np.ndarray:
    """Expected minimum of b values drawn without replacement from `values`, for each b, among
    the finite ones. P(the minimum is the i-th smallest) = C(n - i, b - 1) / C(n, b), computed in
    log space: exact binomials overflow floats past n = 1029."""
    ordered = np.sort(values)
    n = len(ordered)
    finite = np.isfinite(ordered)
    i = np.arange(1, n + 1)
    out = []
    for b in budgets:
        log_w = _log_comb(n - i, b - 1) - _log_comb(n, b)
        w = np.exp(log_w - log_w[finite].max()) * finite if finite.any() else None
        out.append(float(w[finite] @ ordered[finite] / w[finite].sum()) if finite.any() else math.inf)
    return np.array(out)


def _log_comb(n, k):
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        value = special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
    return np.where(n >= k, value, -np.inf)


def budget_curve(trials: list, optimum: float) -> list:
    """Best-so-far by trial number (what TPE did) and the expected best of b trials drawn at random
    from the study's trials (exact, the limit of bootstrapping without replacement)."""
    values = np.array([float(t["objective"]) if t["objective"] else np.inf for t in trials])
    budgets = np.arange(1, len(values) + 1)
    expected = expected_best_without_replacement(values, budgets)
    best_so_far = np.minimum.accumulate(values)
    return [{"trials": int(b), "best_so_far": float(best_so_far[b - 1]), "expected_best": float(expected[b - 1]),
             "regret": float(best_so_far[b - 1] - optimum)} for b in budgets]


def evaluate(dataset: Dataset, params: Params, studies_dir: Path, out_dir: Path = EVAL_DIR,
             summary_path: Path = SUMMARY) -> dict:
    ev, floor = params.evaluate, dataset.stats["least_squares"]["loss"]
    seeds = np.arange(ev.first_seed, ev.first_seed + ev.seeds)
    curves, coordinates, land, budget, quad, summary = [], [], [], [], [], {}
    convergence, eff_mean = {}, {}
    for name in params.study.optimizers:
        opt = optimizers.get(name)
        best, trials = read_study(name, studies_dir)
        settings = {"tuned": best["hyperparams"], "book": params.book[name]}
        points, grid_hyper, grid_seeds = landscape_grid(name, params)
        *trained, grid_runs = engine.train_groups(
            dataset, name, [(hyper, seeds) for hyper in settings.values()] + [(grid_hyper, grid_seeds)], params.train)
        runs = dict(zip(settings, trained))
        for family, result in runs.items():
            curves += _curve_rows(family, name, seeds, result, floor)
        tuned = runs["tuned"]
        kept = ~tuned.diverged  # means over the seeds that did not diverge (all, unless one did)
        convergence[name] = tuned.losses[kept].mean(axis=0) if kept.any() else np.full(len(tuned.examples), np.nan)
        eff_mean[name] = tuned.effective_lr[kept].mean(axis=(0, 2)) if kept.any() else convergence[name]
        for family, r in runs.items():
            per_coord = r.effective_lr[~r.diverged].mean(axis=0) if (~r.diverged).any() else r.effective_lr[0] * np.nan
            coordinates += [{"family": family, "optimizer": name, "examples": int(x), "coordinate": c,
                             "effective_lr": float(per_coord[i, j])}
                            for i, x in enumerate(r.examples) for j, c in enumerate(CORDS)]

        # Framework: Keras's built-in, through the book's eager loop, on the first evaluation seeds.
        keras_gap = None
        if opt.keras is not None:
            keras = [reference.train_eager(dataset, name, best["hyperparams"], int(s), params.train, use_keras=True,
                                           book_loop=False) for s in seeds[: ev.framework_seeds]]
            for seed, k in zip(seeds, keras):
                curves += _curve_rows("framework", name, [seed], k, floor)
            with np.errstate(invalid="ignore"):
                gaps = [np.abs(k.losses[0] - tuned.losses[i]).max() for i, k in enumerate(keras)]
            keras_gap = float(np.nanmax(gaps)) if np.isfinite(gaps).any() else None

        grid_rows = landscape(name, points, grid_runs, params)
        land += grid_rows
        finite = [r for r in grid_rows if not r["diverged"]]
        optimum = min(finite, key=lambda r: r["objective"]) if finite else None
        optimum_value = optimum["objective"] if optimum else None
        budget += [{"optimizer": name, **row} for row in budget_curve(trials, optimum_value or math.nan)]

        path = quadratic.trace(name, ev.quadratic[name], ev.quadratic_steps)
        quad += [{"optimizer": name, "step": i, "x1": x[0], "x2": x[1], "f": float(quadratic.f(x))}
                 for i, x in enumerate(path)]

        reach = {f: examples_to_floor(r, floor, ev.floor_tolerance) for f, r in runs.items()}
        summary[name] = {
            **{f"{family}_hyperparams": hyper for family, hyper in settings.items()},
            **{f"{family}_final_loss": mean_ci(r.final_loss) for family, r in runs.items()},
            **{f"{family}_diverged_seeds": int(r.diverged.sum()) for family, r in runs.items()},
            **{f"{family}_examples_to_floor": _reach_summary(reach[family], len(seeds)) for family in runs},
            "trials": len(trials),
            "diverged_trials": sum(t["diverged"] == "1" for t in trials),
            "study_best": best["value"],
            "grid_points": len(grid_rows),
            "grid_optimum": optimum_value,
            "grid_optimum_hyperparams": {h: optimum[h] for h in opt.hyperparams} if optimum else None,
            "regret": None if optimum_value is None else best["value"] - optimum_value,
            "keras_max_abs_diff": keras_gap,
        }
    result = {"floor": floor, "seeds": seeds.tolist(), "floor_tolerance": ev.floor_tolerance, "optimizers": summary}
    examples = next(iter(runs.values())).examples
    _write_csv(out_dir / "curves.csv", curves)
    _write_csv(out_dir / "convergence.csv", [{"examples": int(x), **{n: float(c[i]) for n, c in convergence.items()}}
                                             for i, x in enumerate(examples)])
    _write_csv(out_dir / "effective_lr.csv", [{"examples": int(x), **{n: float(c[i]) for n, c in eff_mean.items()}}
                                              for i, x in enumerate(examples)])
    _write_csv(out_dir / "coordinates.csv", coordinates)
    _write_csv(out_dir / "landscape.csv", land)
    _write_csv(out_dir / "budget.csv", budget)
    _write_csv(out_dir / "quadratic.csv", quad)
    fileio.write_json(summary_path, result)
    return result


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
