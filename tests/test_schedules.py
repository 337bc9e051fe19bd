"""Chapter 11.11's schedules: the book's figures through `python -m pipeline schedule`, against the
book's own (stateful) classes transcribed here, and against Keras where Keras has the schedule."""
import json
import math

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, cli
from pipeline.core import schedules
from pipeline.core.tfimport import tf


# The book's classes as D2L 11.11 writes them (its MultiFactorScheduler is MXNet's): stateful, called
# once per update in order. An independent computation of what our closed forms must print.
class FactorScheduler:
    def __init__(self, factor=1, stop_factor_lr=1e-7, base_lr=0.1):
        self.factor, self.stop_factor_lr, self.base_lr = factor, stop_factor_lr, base_lr

    def __call__(self, num_update):
        self.base_lr = max(self.stop_factor_lr, self.base_lr * self.factor)
        return self.base_lr


class MultiFactorScheduler:  # mxnet.lr_scheduler.MultiFactorScheduler
    def __init__(self, step, factor=1, base_lr=0.01):
        self.step, self.factor, self.base_lr, self.cur_step_ind = step, factor, base_lr, 0

    def __call__(self, num_update):
        while self.cur_step_ind <= len(self.step) - 1:
            if num_update > self.step[self.cur_step_ind]:
                self.cur_step_ind += 1
                self.base_lr *= self.factor
            else:
                return self.base_lr
        return self.base_lr


class CosineScheduler:
    def __init__(self, max_update, base_lr=0.01, final_lr=0, warmup_steps=0, warmup_begin_lr=0):
        self.base_lr_orig, self.max_update, self.final_lr = base_lr, max_update, final_lr
        self.warmup_steps, self.warmup_begin_lr = warmup_steps, warmup_begin_lr
        self.max_steps = self.max_update - self.warmup_steps

    def get_warmup_lr(self, epoch):
        increase = (self.base_lr_orig - self.warmup_begin_lr) * float(epoch) / float(self.warmup_steps)
        return self.warmup_begin_lr + increase

    def __call__(self, epoch):
        if epoch < self.warmup_steps:
            return self.get_warmup_lr(epoch)
        if epoch <= self.max_update:
            self.base_lr = self.final_lr + (self.base_lr_orig - self.final_lr) * (
                1 + math.cos(math.pi * (epoch - self.warmup_steps) / self.max_steps)) / 2
        return self.base_lr


class SquareRootScheduler:
    def __init__(self, lr=0.1):
        self.lr = lr

    def __call__(self, num_update):
        return self.lr * pow(num_update + 1.0, -0.5)


BOOK = {  # the five figures: (command line, the book's scheduler, updates)
    "factor": (["factor", "--steps", "50", "--factor", "0.9", "--stop-lr", "0.01", "--base-lr", "2.0"],
               FactorScheduler(factor=0.9, stop_factor_lr=1e-2, base_lr=2.0), 50),
    "multifactor": (["multifactor", "--steps", "40", "--steps-at", "15,30", "--factor", "0.5", "--base-lr", "0.5"],
                    MultiFactorScheduler(step=[15, 30], factor=0.5, base_lr=0.5), 40),
    "cosine": (["cosine", "--steps", "30", "--max-update", "20", "--base-lr", "0.5", "--final-lr", "0.01"],
               CosineScheduler(max_update=20, base_lr=0.5, final_lr=0.01), 30),
    "cosine with warmup": (["warmup_cosine", "--steps", "30", "--max-update", "20", "--base-lr", "0.5", "--final-lr",
                            "0.01", "--warmup-steps", "5", "--warmup-begin-lr", "0.0"],
                           CosineScheduler(20, warmup_steps=5, base_lr=0.5, final_lr=0.01), 30),
    "sqrt": (["sqrt", "--steps", "30", "--base-lr", "1.0"], SquareRootScheduler(lr=1.0), 30),
}


@pytest.mark.parametrize("figure", BOOK)
def test_schedule_command_prints_the_books_figure(figure):
    args, book, steps = BOOK[figure]
    expected = [book(t) for t in range(steps)]
    out = cli("schedule", *args, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"t {t} lr {v:.6f}" for t, v in enumerate(expected)]
    as_json = cli("schedule", *args, "--json", cwd=ROOT)
    assert np.allclose(json.loads(as_json.stdout), expected, rtol=0, atol=1e-12)


def test_the_factor_schedules_first_value_has_already_decayed():
    out = cli("schedule", "factor", "--steps", "2", "--base-lr", "2.0", "--factor", "0.9", "--stop-lr", "0.01",
              cwd=ROOT)
    assert out.stdout.splitlines()[0] == "t 0 lr 1.800000"


def test_every_setting_left_out_is_the_books_figures():
    out = cli("schedule", "warmup_cosine", "--json", cwd=ROOT)
    book = schedules.get("warmup_cosine").book
    expected = CosineScheduler(book["max_update"], base_lr=book["base_lr"], final_lr=book["final_lr"],
                               warmup_steps=book["warmup_steps"], warmup_begin_lr=book["warmup_begin_lr"])
    assert np.allclose(json.loads(out.stdout), [expected(t) for t in range(book["steps"])], rtol=0, atol=1e-12)


# Keras in float64 (every argument a float64), so both sides compute the same formula exactly.
f64 = np.float64
KERAS = {
    "factor (ExponentialDecay, asked at t + 1)": (
        "factor", 2.0, {"factor": 0.9, "stop_lr": 1e-9}, 50, 1,
        lambda: tf.keras.optimizers.schedules.ExponentialDecay(f64(2.0), decay_steps=1, decay_rate=f64(0.9))),
    "multifactor (PiecewiseConstantDecay)": (
        "multifactor", 0.5, {"factor": 0.5, "steps_at": (15, 30)}, 40, 0,
        lambda: tf.keras.optimizers.schedules.PiecewiseConstantDecay([15, 30], [f64(0.5), f64(0.25), f64(0.125)])),
    "cosine (CosineDecay)": (
        "cosine", 0.5, {"final_lr": 0.01, "max_update": 20}, 30, 0,
        lambda: tf.keras.optimizers.schedules.CosineDecay(f64(0.5), decay_steps=20, alpha=f64(0.01 / 0.5))),
    "warmup_cosine (CosineDecay with warmup)": (
        "warmup_cosine", 0.5, {"final_lr": 0.01, "max_update": 20, "warmup_steps": 5, "warmup_begin_lr": 0.05}, 30, 0,
        lambda: tf.keras.optimizers.schedules.CosineDecay(f64(0.05), decay_steps=15, alpha=f64(0.01 / 0.5),
                                                          warmup_target=f64(0.5), warmup_steps=5)),
}


@pytest.mark.parametrize("case", KERAS)
def test_schedules_equal_keras_where_keras_has_them(case):
    name, base, settings, steps, shift, make = KERAS[case]
    keras = make()
    theirs = np.array([float(keras(t + shift)) for t in range(steps)])
    ours = schedules.values(name, steps, base, settings)
    assert np.abs(ours - theirs).max() <= 1e-7


def test_warmup_linear_rises_then_falls_in_straight_lines():
    rates = schedules.values("warmup_linear", 30, 0.5, {"final_lr": 0.01, "max_update": 20, "warmup_steps": 5,
                                                        "warmup_begin_lr": 0.1})
    assert np.allclose(rates[:6], np.linspace(0.1, 0.5, 6)) and np.allclose(rates[5:21], np.linspace(0.5, 0.01, 16))
    assert np.all(rates[20:] == 0.01)


@pytest.mark.parametrize("args, fragments", [
    (["multifactor", "--final-lr", "0.1"], ["--final-lr", "multifactor", "--factor, --steps-at"]),
    (["sqrt", "--factor", "0.5"], ["--factor", "sqrt", "only --base-lr and --steps"]),
    (["warmup_cosine", "--max-update", "5", "--warmup-steps", "5"], ["max_update", "--max-update"]),
    (["multifactor", "--steps-at", "30,15"], ["steps_at", "increasing"]),
    (["multifactor", "--steps-at", "15,x"], ["--steps-at", "15,30"]),
    (["factor", "--factor", "1.5"], ["--factor"]),
    (["cosine", "--base-lr", "-1"], ["--base-lr"]),
    (["triangle"], ["triangle", "warmup_cosine"]),
])
def test_bad_schedule_input_is_one_line(args, fragments):
    assert_one_line_error(cli("schedule", *args, cwd=ROOT), *fragments)
