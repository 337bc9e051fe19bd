"""Chapter 11.11's learning-rate schedules (and 11.4's square root), from scratch.

A schedule is a pure function of the update count: `lr(t, base_lr, settings)` gives the rate of
update t = 0, 1, ... (t a float tensor of any shape). It is written in TensorFlow ops, so a compiled
training loop can call it as it is. Formulas and names are the book's classes':
  constant      base_lr
  sqrt          base_lr (t + 1)^-1/2                                        (SquareRootScheduler)
  factor        max(stop_lr, base_lr factor^(t + 1))                        (FactorScheduler)
  multifactor   base_lr factor^k, k the number of steps_at that t is past   (MXNet's MultiFactorScheduler)
  cosine        final_lr + (base_lr - final_lr)(1 + cos(pi t / max_update)) / 2 up to max_update,
                then final_lr                                               (CosineScheduler)
  warmup_cosine the same after a linear warmup from warmup_begin_lr over warmup_steps updates
                (CosineScheduler with warmup_steps; the cosine then spans max_update - warmup_steps)
  warmup_linear a linear warmup, then a linear decay to final_lr at max_update: the trapezoid of
                current practice without its flat top; none of the book's
FactorScheduler is stateful in the book: each call multiplies first and then returns, so its
first value is already base_lr * factor; `lr` keeps that.

The registry is the one place that knows a schedule: the settings it reads, the book's demo (the
values its figure plots) and how a study sets it. In a study a schedule's settings are fractions of
the run (RUN_SETTINGS: the final rate as a fraction of the initial, the warmup as a fraction of the
steps), so one setting carries across problems and budgets; `in_run` turns them into the book's.
The engine multiplies each step by `run_factors`, the schedule at base rate 1. Over a run of n
updates t = 0 .. n - 1, with w = round(warmup n) warmup updates:
  constant      1
  sqrt          (t + 1)^-1/2
  factor        final^((t + 1) / n): the book's first value has decayed once; the last is final
  multifactor   drop^k, k the number of points round(n/2), round(3n/4) that t is past
  cosine        1 at t = 0 to final at t = n - 1
  warmup_cosine t / w while t < w (0 at the first update), then cosine from 1 at t = w to final at n - 1
  warmup_linear the same warmup, then a straight line from 1 at t = w to final at n - 1
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.pieces import tf


class Setting(NamedTuple):
    name: str
    description: str
    kind: str  # "rate": a learning rate >= 0; "steps": a count of updates; "fraction": in (0, 1); "steps list"


SETTINGS = {s.name: s for s in (
    Setting("final_lr", "the rate the decay ends at", "rate"),
    Setting("max_update", "the update at which the decay ends", "steps"),
    Setting("warmup_steps", "updates of linear warmup", "steps"),
    Setting("warmup_begin_lr", "the rate the warmup starts from", "rate"),
    Setting("factor", "the multiplier per update (factor) or per decay point (multifactor)", "fraction"),
    Setting("stop_lr", "the rate the decay never goes below", "rate"),
    Setting("steps_at", "the updates after which the rate is multiplied by factor", "steps list"),
)}


def _constant(t, base, s):
    return base + 0.0 * t


def _sqrt(t, base, s):
    return base * tf.pow(t + 1.0, -0.5)


def _factor(t, base, s):
    return tf.maximum(base * s["factor"] ** (t + 1.0), s["stop_lr"])


def _multifactor(t, base, s):
    passed = tf.add_n([tf.cast(t > at, t.dtype) for at in s["steps_at"]]) if s["steps_at"] else 0.0 * t
    return base * s["factor"] ** passed


def _warmup(t, base, s):
    """The linear warmup from warmup_begin_lr to base_lr over warmup_steps updates (t < warmup_steps)."""
    return s["warmup_begin_lr"] + (base - s["warmup_begin_lr"]) * t / max(s["warmup_steps"], 1)


def _cosine(t, base, s):
    warmup, end = s.get("warmup_steps", 0), s["max_update"]
    span = max(end - warmup, 1)
    decayed = s["final_lr"] + (base - s["final_lr"]) * (1.0 + tf.cos(math.pi * (t - warmup) / span)) / 2.0
    decayed = tf.where(t <= end, decayed, s["final_lr"] + 0.0 * t)
    return tf.where(t < warmup, _warmup(t, base, s), decayed) if warmup else decayed


def _warmup_linear(t, base, s):
    warmup, end = s["warmup_steps"], s["max_update"]
    done = tf.minimum(tf.maximum(t - warmup, 0.0) / max(end - warmup, 1), 1.0)  # of the decay
    decay = s["final_lr"] * done + base * (1.0 - done)  # exactly final_lr once done
    return tf.where(t < warmup, _warmup(t, base, s), decay)


class RunSetting(NamedTuple):
    """A schedule's setting in a study, as a fraction of the run; searched like a hyperparameter."""

    name: str
    description: str
    default: float  # outside a study (`train --schedule`, the evaluation's cosine demo); a study searches
                    # params.yaml's study.search_space.<name>


RUN_SETTINGS = {s.name: s for s in (
    RunSetting("final", "the rate at the end of the run, as a fraction of the initial rate", 0.01),
    RunSetting("warmup", "the fraction of the run spent warming up linearly from 0", 0.1),
    RunSetting("drop", "the multiplier at each decay point (multifactor)", 0.1),
)}
DROP_AT = (0.5, 0.75)  # multifactor's decay points in a study, as fractions of the run


def _ends_at(final, steps):
    """Updates run 0 .. steps - 1: the decay ends exactly at `final` on the last one."""
    return {"final_lr": final, "max_update": steps - 1}


def _warms(final, warmup, steps):
    return {**_ends_at(final, steps), "warmup_steps": round(warmup * steps), "warmup_begin_lr": 0.0}


class Schedule(NamedTuple):
    name: str
    label: str
    settings: tuple  # the names (SETTINGS) lr reads
    lr: Callable  # (t, base_lr, settings) -> the rate of update t
    book: dict  # the book's demo: base_lr, steps (the figure's length) and each setting
    run_settings: tuple = ()  # the names (RUN_SETTINGS) a study searches
    in_run: Callable = lambda steps: {}  # (steps, **run settings) -> the book's settings at base rate 1


SCHEDULES = {s.name: s for s in (
    Schedule("constant", "constant", (), _constant, {"base_lr": 0.1, "steps": 30}),
    Schedule("sqrt", "square root", (), _sqrt, {"base_lr": 1.0, "steps": 30}),
    # In a study: a constant factor per update that reaches `final` at the run's end (and stops there).
    Schedule("factor", "factor", ("factor", "stop_lr"), _factor,
             {"base_lr": 2.0, "steps": 50, "factor": 0.9, "stop_lr": 1e-2},
             ("final",), lambda steps, final: {"factor": final ** (1.0 / steps), "stop_lr": final}),
    Schedule("multifactor", "multi-factor", ("factor", "steps_at"), _multifactor,
             {"base_lr": 0.5, "steps": 30, "factor": 0.5, "steps_at": (15, 30)},
             ("drop",), lambda steps, drop: {"factor": drop, "steps_at": tuple(round(f * steps) for f in DROP_AT)}),
    Schedule("cosine", "cosine", ("final_lr", "max_update"), _cosine,
             {"base_lr": 0.5, "steps": 30, "final_lr": 0.01, "max_update": 20},
             ("final",), lambda steps, final: _ends_at(final, steps)),
    Schedule("warmup_cosine", "cosine with warmup", ("final_lr", "max_update", "warmup_steps", "warmup_begin_lr"),
             _cosine, {"base_lr": 0.5, "steps": 30, "final_lr": 0.01, "max_update": 20, "warmup_steps": 5,
                       "warmup_begin_lr": 0.0},
             ("final", "warmup"), lambda steps, final, warmup: _warms(final, warmup, steps)),
    Schedule("warmup_linear", "linear warmup and decay", ("final_lr", "max_update", "warmup_steps", "warmup_begin_lr"),
             _warmup_linear, {"base_lr": 0.5, "steps": 30, "final_lr": 0.01, "max_update": 20, "warmup_steps": 5,
                              "warmup_begin_lr": 0.0},
             ("final", "warmup"), lambda steps, final, warmup: _warms(final, warmup, steps)),
)}


def get(name: str) -> Schedule:
    try:
        return SCHEDULES[name]
    except KeyError:
        raise PipelineError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}") from None


def check(schedule: Schedule, base_lr: float, settings: dict) -> None:
    """A setting the schedule cannot use is refused in one line that names it and the fix."""
    s = settings
    if base_lr < 0:
        raise PipelineError(f"{schedule.name}: base_lr must be >= 0, got {base_lr:g}")
    if "factor" in s and not 0 < s["factor"] <= 1:
        raise PipelineError(f"{schedule.name}: factor must be in (0, 1], got {s['factor']:g}")
    if "max_update" in s and s["max_update"] <= s.get("warmup_steps", 0):
        raise PipelineError(f"{schedule.name}: max_update ({s['max_update']}) must be past the warmup "
                            f"({s.get('warmup_steps', 0)} steps): raise --max-update or lower --warmup-steps")
    if list(s.get("steps_at", ())) != sorted(set(s.get("steps_at", ()))):
        raise PipelineError(f"{schedule.name}: steps_at must be increasing, got {list(s['steps_at'])}")


def values(name: str, steps: int, base_lr: float, settings: dict):
    """The rate of each update 0 .. steps - 1, in float64 (NumPy)."""
    schedule = get(name)
    check(schedule, base_lr, settings)
    t = tf.range(steps, dtype=tf.float64)
    return schedule.lr(t, tf.constant(base_lr, tf.float64), settings).numpy()


@functools.lru_cache(maxsize=1024)
def run_factors(name: str, run_settings: tuple, steps: int) -> np.ndarray:
    """(steps,) float32: the factor each update's learning rate is multiplied by, the schedule at
    base rate 1 with a study's settings ((name, fraction) pairs). Computed once per schedule and
    setting in float64 by the same function the `schedule` command prints; the compiled loop reads
    row t. A constant schedule is exactly 1.0, so it changes no bit of a run."""
    schedule = get(name)
    absolute = schedule.in_run(steps, **dict(run_settings))
    check(schedule, 1.0, absolute)
    t = tf.range(steps, dtype=tf.float64)
    return schedule.lr(t, tf.constant(1.0, tf.float64), absolute).numpy().astype(np.float32)


def factor_table(names, settings: dict, steps: int) -> tuple:
    """((steps, U) float32 factors, (K,) int32 column of each row) for K rows with their schedule
    names and settings (RUN_SETTINGS name -> K values; a row reads only its schedule's). Vectorised
    over rows: a grid of thousands of configurations shares a handful of columns."""
    names = np.asarray(names, dtype=object)
    columns, index = [], np.zeros(len(names), np.int32)
    for name in dict.fromkeys(names.tolist()):
        rows, reads = np.flatnonzero(names == name), get(name).run_settings
        values = np.stack([settings[s][rows] for s in reads], axis=1) if reads else np.zeros((len(rows), 0))
        if (values == values[:1]).all():  # one setting for all (a trial, a grid over lr): np.unique costs 1 ms at K = 1024
            unique, inverse = values[:1], np.zeros(len(rows), np.int64)
        else:
            unique, inverse = np.unique(values, axis=0, return_inverse=True)
        index[rows] = len(columns) + inverse.ravel()
        columns += [run_factors(name, tuple(zip(reads, map(float, u))), steps) for u in unique]
    return np.stack(columns, axis=1), index


def hooks(opt, hyper, lr_factor, schedule_index):
    """How a step's schedule factor enters a compiled loop: the optimizer's lr times the factor
    (a constant schedule's 1.0 then changes no bit), or, for Adadelta, which has no lr, its step
    times the factor; the effective lr includes it either way."""
    def factor(t):  # (K, 1): step t's factor per row
        return tf.gather(lr_factor[t], schedule_index)[:, None]

    if "lr" in opt.hyperparams:
        scheduled = lambda h, t: {**h, "lr": h["lr"] * factor(t)}  # noqa: E731
        return scheduled, lambda delta, t: delta, lambda state, t: opt.effective_lr(state, scheduled(hyper, t))
    return (lambda h, t: h), lambda delta, t: delta * factor(t), lambda state, t: opt.effective_lr(state, hyper) * factor(t)
