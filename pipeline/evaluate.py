"""`evaluate` stage: re-run the winners, compare with the book and Keras, map the landscape.

One batched engine call per optimizer: tuned, book and landscape runs share its compilation. Writes under reports/evaluation/:
  curves.csv         family (tuned, book, framework), optimizer, seed, examples, loss, excess_loss
  convergence.csv    examples and each optimizer's mean tuned loss (for `dvc plots`)
  effective_lr.csv   examples and each optimizer's mean tuned effective lr (for `dvc plots`)
  coordinates.csv    family, optimizer, examples, coordinate, effective_lr (mean over seeds)
  landscape.csv      optimizer, lr, gamma, objective, diverged: a dense grid on the study's seeds
  budget.csv         optimizer, trials, best_so_far, expected_best, regret
  quadratic.csv      optimizer, step, x1, x2, f: the book's 2-D demo
and reports/summary.json (declared as DVC metrics): per optimizer: settings, final loss mean and 95% CI, examples to the floor,
                     trials, regret, from-scratch vs Keras difference
"""
import csv
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from pipeline import engine, fileio, optimizers, quadratic, reference
from pipeline.config import Params, Range
from pipeline.data import Dataset
from pipeline.errors import PipelineError
from pipeline.paths import EVAL_DIR, SUMMARY

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


def mean_ci(values: np.ndarray) -> tuple:
    """Mean and 95% t-interval half-width over seeds."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return float(values.mean()), float(half)


def grid(r: Range, n: int) -> np.ndarray:
    """n points spanning a search range on the scale it is sampled on."""
    if r.scale == "log":
        return np.geomspace(r.low, r.high, n)
    if r.scale == "log1m":
        return 1.0 - np.geomspace(1.0 - r.low, 1.0 - r.high, n)
    return np.linspace(r.low, r.high, n)


def landscape_grid(optimizer: str, params: Params) -> tuple:
    """The study's search space as a dense grid, each point repeated over the study's seeds:
    (points {hyperparameter: (k,)}, hyper {hyperparameter: (k * s,)}, seeds (k * s,))."""
    space, ev = params.study.search_space, params.evaluate
    names = optimizers.get(optimizer).hyperparams
    side = ev.lr_points if len(names) == 1 else ev.grid_points
    axes = np.meshgrid(*[grid(space[h], side) for h in names], indexing="ij")
    points = {h: a.reshape(-1) for h, a in zip(names, axes)}
    seeds = np.arange(params.study.seeds_per_trial)
    k = len(points["lr"])
    return points, {h: np.repeat(v, len(seeds)) for h, v in points.items()}, np.tile(seeds, k)


def landscape(optimizer: str, points: dict, result: engine.TrainResult, params: Params) -> list:
    """The study's objective at each grid point, from the runs of landscape_grid: its minimum is
    ground truth for the study."""
    k = len(points["lr"])
    score = result.score(params.study.objective).reshape(k, -1)
    diverged = result.diverged.reshape(k, -1).any(axis=1)
    value = np.where(diverged, np.nan, score.mean(axis=1))
    return [{"optimizer": optimizer, "lr": points["lr"][i], "gamma": points.get("gamma", [None] * k)[i],
             "objective": value[i], "diverged": int(diverged[i])} for i in range(k)]


def budget_curve(trials: list, optimum: float) -> list:
    """Best-so-far by trial number (what TPE did) and the expected best of b trials drawn at random
    from the study's trials (exact, the limit of bootstrapping without replacement)."""
    values = np.array([float(t["objective"]) if t["objective"] else np.inf for t in trials])
    ordered, n = np.sort(values), len(values)
    rows = []
    for b in range(1, n + 1):
        # P(min of b draws is the i-th smallest) = C(n - i, b - 1) / C(n, b), i = 1..n
        weights = np.array([math.comb(n - i, b - 1) for i in range(1, n + 1)], dtype=np.float64) / math.comb(n, b)
        finite = np.isfinite(ordered)
        expected = float(weights[finite] @ ordered[finite] / weights[finite].sum()) if finite.any() else math.inf
        best_so_far = float(values[:b].min())
        rows.append({"trials": b, "best_so_far": best_so_far, "expected_best": expected,
                     "regret": best_so_far - optimum})
    return rows


def evaluate(dataset: Dataset, params: Params, studies_dir: Path, out_dir: Path = EVAL_DIR,
             summary_path: Path = SUMMARY) -> dict:
    ev, floor = params.evaluate, dataset.stats["least_squares"]["loss"]
    seeds = np.arange(ev.first_seed, ev.first_seed + ev.seeds)
    curves, coordinates, land, budget, quad, summary = [], [], [], [], [], {}
    convergence, eff_mean = {}, {}
    for name in params.study.optimizers:
        best, trials = read_study(name, studies_dir)
        settings = {"tuned": best["hyperparams"], "book": params.book[name]}
        points, grid_hyper, grid_seeds = landscape_grid(name, params)
        *trained, grid_runs = engine.train_groups(
            dataset, name, [(hyper, seeds) for hyper in settings.values()] + [(grid_hyper, grid_seeds)], params.train)
        runs = dict(zip(settings, trained))
        for family, result in runs.items():
            for seed, losses in zip(seeds, result.losses):
                curves += [{"family": family, "optimizer": name, "seed": int(seed), "examples": int(x),
                            "loss": float(v), "excess_loss": float(v - floor)} for x, v in zip(result.examples, losses)]
        tuned = runs["tuned"]
        convergence[name] = tuned.losses.mean(axis=0)
        eff_mean[name] = tuned.effective_lr.mean(axis=(0, 2))
        for family, r in runs.items():
            per_coord = r.effective_lr.mean(axis=0)
            coordinates += [{"family": family, "optimizer": name, "examples": int(x), "coordinate": c,
                             "effective_lr": float(per_coord[i, j])}
                            for i, x in enumerate(r.examples) for j, c in enumerate(CORDS)]

        # Framework: Keras's built-in, through the book's eager loop, on the first evaluation seeds.
        keras = [reference.train_eager(dataset, name, best["hyperparams"], int(s), params.train, use_keras=True,
                                       book_loop=False) for s in seeds[: ev.framework_seeds]]
        for seed, k in zip(seeds, keras):
            curves += [{"family": "framework", "optimizer": name, "seed": int(seed), "examples": int(x),
                        "loss": float(v), "excess_loss": float(v - floor)} for x, v in zip(k.examples, k.losses[0])]
        keras_gap = float(max(np.abs(k.losses[0] - tuned.losses[i]).max() for i, k in enumerate(keras)))

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
            **{f"{family}_final_loss": dict(zip(("mean", "ci95"), mean_ci(r.final_loss))) for family, r in runs.items()},
            **{f"{family}_diverged_seeds": int(r.diverged.sum()) for family, r in runs.items()},
            **{f"{family}_examples_to_floor": {
                "median": float(np.median([x for x in reach[family] if x is not None])) if any(x is not None for x in reach[family]) else None,
                "seeds_reached": sum(x is not None for x in reach[family]), "seeds": len(seeds)} for family in runs},
            "trials": len(trials),
            "diverged_trials": sum(t["diverged"] == "1" for t in trials),
            "study_best": best["value"],
            "grid_optimum": optimum_value,
            "grid_optimum_hyperparams": {h: optimum[h] for h in optimizers.get(name).hyperparams} if optimum else None,
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


def _write_csv(path: Path, rows: list) -> None:
    fields = list(rows[0]) if rows else []
    with fileio.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fields, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else repr(float(v)) if isinstance(v, (float, np.floating)) else v)
                        for k, v in row.items()})
