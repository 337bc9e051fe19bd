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

The registry is the one place that knows a schedule: the settings it reads and the book's demo
(the values its figure plots).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

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


class Schedule(NamedTuple):
    name: str
    label: str
    settings: tuple  # the names (SETTINGS) lr reads
    lr: Callable  # (t, base_lr, settings) -> the rate of update t
    book: dict  # the book's demo: base_lr, steps (the figure's length) and each setting


SCHEDULES = {s.name: s for s in (
    Schedule("constant", "constant", (), _constant, {"base_lr": 0.1, "steps": 30}),
    Schedule("sqrt", "square root", (), _sqrt, {"base_lr": 1.0, "steps": 30}),
    Schedule("factor", "factor", ("factor", "stop_lr"), _factor,
             {"base_lr": 2.0, "steps": 50, "factor": 0.9, "stop_lr": 1e-2}),
    Schedule("multifactor", "multi-factor", ("factor", "steps_at"), _multifactor,
             {"base_lr": 0.5, "steps": 30, "factor": 0.5, "steps_at": (15, 30)}),
    Schedule("cosine", "cosine", ("final_lr", "max_update"), _cosine,
             {"base_lr": 0.5, "steps": 30, "final_lr": 0.01, "max_update": 20}),
    Schedule("warmup_cosine", "cosine with warmup", ("final_lr", "max_update", "warmup_steps", "warmup_begin_lr"),
             _cosine, {"base_lr": 0.5, "steps": 30, "final_lr": 0.01, "max_update": 20, "warmup_steps": 5,
                       "warmup_begin_lr": 0.0}),
    Schedule("warmup_linear", "linear warmup and decay", ("final_lr", "max_update", "warmup_steps", "warmup_begin_lr"),
             _warmup_linear, {"base_lr": 0.5, "steps": 30, "final_lr": 0.01, "max_update": 20, "warmup_steps": 5,
                              "warmup_begin_lr": 0.0}),
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
