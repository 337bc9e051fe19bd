"""Schedules inside the engine's compiled loop: every optimizer's trajectory under a schedule against
an independent float64 computation (the book's formulas, each schedule from the README's words),
batched rows with different schedules against single calls, and a constant schedule changing nothing."""
import dataclasses

import numpy as np
import pytest

from pipeline.core import config, engine, network, problems, randomness, schedules
from test_network import numpy_loss, numpy_network
from conftest import PARAMS
from test_optimizers import ALL, numpy_step

# Every schedule, with its study settings at values other than the defaults.
SETTINGS = {"constant": {}, "sqrt": {}, "factor": {"final": 0.05}, "multifactor": {"drop": 0.3},
            "cosine": {"final": 0.02}, "warmup_cosine": {"final": 0.05, "warmup": 0.2},
            "warmup_linear": {"final": 0.1, "warmup": 0.15}}


def readme_factors(name: str, n: int, final=None, warmup=None, drop=None) -> np.ndarray:
    """Each update's factor over a run of n updates t = 0 .. n - 1, in float64, written from the
    README's words (not the code's): a decay ends at `final` on the last update, t = n - 1; a warmup
    of w = round(warmup n) updates rises from 0 at t = 0 by 1/w per update; multi-factor multiplies
    by `drop` after half and after three quarters of the run; factor's first value has decayed once."""
    t = np.arange(n, dtype=np.float64)
    if name == "constant":
        return np.ones(n)
    if name == "sqrt":
        return 1 / np.sqrt(t + 1)
    if name == "factor":
        return final ** ((t + 1) / n)
    if name == "multifactor":
        return drop ** ((t > round(n / 2)).astype(float) + (t > round(3 * n / 4)).astype(float))
    w = round(warmup * n) if warmup else 0
    done = (t - w) / (n - 1 - w)  # of the decay: 0 at its first update, 1 at the run's last
    decay = final + (1 - final) * (1 + np.cos(np.pi * done)) / 2 if "cosine" in name else 1 + (final - 1) * done
    return np.where(t < w, t / max(w, 1), decay)


def scheduled_step(name, theta, g, state, hyper, t, factor):
    """One step of the float64 formulas with the schedule: lr times the factor, or Adadelta's step
    times it (its averages see the unscaled step, as Keras's learning rate does)."""
    if "lr" in hyper:
        return numpy_step(name, theta, g, state, {**hyper, "lr": hyper["lr"] * factor}, t)
    new, eff = numpy_step(name, theta, g, state, hyper, t)
    return theta + factor * (new - theta), eff * factor


@pytest.mark.parametrize("schedule", sorted(SETTINGS))
def test_every_schedule_ends_at_final_on_the_last_update(schedule):
    """The factors the engine multiplies by, against the README's words, over runs of several lengths:
    a decay reaches `final` exactly (in the engine's float32) at update n - 1, not one update later."""
    for n in (40, 300, 1500, 24000):
        ours = schedules.run_factors(schedule, tuple(sorted(SETTINGS[schedule].items())), n)
        expected = readme_factors(schedule, n, **SETTINGS[schedule])
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7)
        if "final" in SETTINGS[schedule]:
            assert ours[-1] == np.float32(SETTINGS[schedule]["final"]) and ours[-2] > ours[-1], (n, ours[-3:])
    assert readme_factors("cosine", 300, final=0.01)[-1] == 0.01  # the spec itself ends there


@pytest.mark.parametrize("schedule", sorted(SETTINGS))
@pytest.mark.parametrize("name", ALL)
def test_linear_model_under_a_schedule_follows_float64(name, schedule, dataset, params):
    """40 steps of batch 10 on 200 real rows, loss and effective lr after every step, each step's
    factor from the README's words."""
    protocol = dataclasses.replace(params.train, epochs=2, record_every=10)
    small = dataset._replace(features=dataset.features[:200], target=dataset.target[:200])
    hyper = PARAMS.book[name]
    ours = engine.train(small, name, {**hyper, **SETTINGS[schedule]}, [3], protocol, "linreg", schedule=schedule)
    theta0, batches = problems.get("linreg").stream(3, 200, 5, protocol)
    X = np.concatenate([small.features, np.ones((200, 1))], axis=1).astype(np.float64)
    y = small.target.astype(np.float64)
    factors = readme_factors(schedule, 40, **SETTINGS[schedule])
    assert schedule == "constant" or factors.min() < 0.35 * factors.max()  # the rate really moves in the run
    theta, state, losses, effs = theta0.astype(np.float64), {}, [], []
    for t, rows in enumerate(batches.reshape(-1, 10), start=1):
        g = X[rows].T @ (X[rows] @ theta - y[rows]) / len(rows)
        theta, eff = scheduled_step(name, theta, g, state, hyper, t, factors[t - 1])
        losses.append(np.mean((X @ theta - y) ** 2) / 2)
        effs.append(np.broadcast_to(eff, theta.shape))
    np.testing.assert_allclose(ours.losses[0], losses, rtol=1e-5)
    np.testing.assert_allclose(ours.effective_lr[0], np.array(effs), rtol=1e-4)


@pytest.mark.parametrize("name", ["sgd", "adadelta", "adam"])
def test_network_under_warmup_cosine_follows_float64(name, dataset, params):
    """100 minibatch steps of the tanh network with cosine decay after a warmup."""
    rows, batch, sizes = 200, 10, (5, 64, 64, 1)
    protocol = dataclasses.replace(params.train, batch_size=batch, epochs=5, record_every=batch)
    small = dataset._replace(features=dataset.features[:rows], target=dataset.target[:rows])
    hyper = {h: v / 5 if h == "lr" else v for h, v in PARAMS.book[name].items()}
    ours = engine.train(small, name, {**hyper, **SETTINGS["warmup_cosine"]}, [7], protocol, "mlp", "warmup_cosine")
    theta = network.initial_params(7, sizes).astype(np.float64)
    X, y = small.features.astype(np.float64), small.target.astype(np.float64)
    factors, state, losses = readme_factors("warmup_cosine", 100, **SETTINGS["warmup_cosine"]), {}, []
    for t, rows_t in enumerate(randomness.batch_order(7, rows, protocol).reshape(-1, batch), start=1):
        theta, _ = scheduled_step(name, theta, numpy_network(theta, X, y, rows_t), state, hyper, t, factors[t - 1])
        losses.append(numpy_loss(theta, X, y))
    np.testing.assert_allclose(ours.losses[0], losses, rtol=1e-5)


@pytest.mark.parametrize("problem", ["linreg", "mlp"])
@pytest.mark.parametrize("name", ["sgd", "adadelta", "adam"])
def test_rows_with_different_schedules_equal_single_calls(name, problem, dataset, params):
    """Constant, cosine, warmup_cosine and multifactor rows (two sharing a seed) in one call equal
    four calls, bit for bit; a setting a row's schedule does not read (NaN here) changes nothing."""
    protocol = dataclasses.replace(config.protocol(params, problem), epochs=2)
    names = ["constant", "cosine", "warmup_cosine", "multifactor"]
    settings = {"final": np.array([np.nan, 0.01, 0.1, np.nan]), "warmup": np.array([np.nan, np.nan, 0.1, np.nan]),
                "drop": np.array([np.nan, np.nan, np.nan, 0.5])}
    hyper, seeds = PARAMS.book[name], np.array([0, 4, 4, 5])
    batched = engine.train(dataset, name, {**hyper, **settings}, seeds, protocol, problem, names)
    for i, schedule in enumerate(names):
        own = {s: v[i] for s, v in settings.items() if s in schedules.get(schedule).run_settings}
        single = engine.train(dataset, name, {**hyper, **own}, [seeds[i]], protocol, problem, schedule)
        np.testing.assert_array_equal(batched.losses[i], single.losses[0])
        np.testing.assert_array_equal(batched.params[i], single.params[0])
        np.testing.assert_array_equal(batched.effective_lr[i], single.effective_lr[0])
    assert not np.array_equal(batched.losses[1], batched.losses[2])  # the schedules did differ


def test_a_constant_schedule_is_the_unscheduled_run(dataset, params):
    """`constant` multiplies lr by exactly 1: the same bits as a run without a schedule argument."""
    default = engine.train(dataset, "rmsprop", {"lr": [0.01, 0.02], "gamma": 0.9}, [0, 1], params.train, "linreg")
    constant = engine.train(dataset, "rmsprop", {"lr": [0.01, 0.02], "gamma": 0.9}, [0, 1], params.train, "linreg",
                            schedule=["constant", "constant"])
    np.testing.assert_array_equal(default.losses, constant.losses)
    assert (schedules.run_factors("constant", (), 300) == 1.0).all()


def test_a_schedule_without_its_setting_is_refused(dataset, params):
    with pytest.raises(ValueError, match=r"needs hyperparameters \['final'\]"):
        engine.train(dataset, "sgd", {"lr": 0.05}, [0], params.train, "linreg", schedule="cosine")
