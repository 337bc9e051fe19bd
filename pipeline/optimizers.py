"""From-scratch optimizers as pure (init, update) pairs, in the style of optax.

Every function here is pure: state in, state out. Parameters are a (K, P) tensor, one row per
configuration trained side by side; hyperparameters arrive as (K, 1) tensors so each row can have
its own. The effective learning rate is read straight from the state.

Formulas are the book's (D2L 11.7-11.8), with eps inside the square root and state starting at 0.
"""
from __future__ import annotations  # annotations name tf.Tensor without importing TensorFlow

import importlib
from typing import Callable, NamedTuple

from pipeline.errors import PipelineError


class _LazyTensorFlow:
    """TensorFlow, imported on first use: the data stages and params validation read this
    registry but never train, and should not pay TensorFlow's seconds-long import."""

    def __getattr__(self, name):
        return getattr(importlib.import_module("pipeline.tfimport").tf, name)


tf = _LazyTensorFlow()

EPS = 1e-6  # the book's epsilon, inside the square root

State = tuple  # a tuple of tensors shaped like the parameters (empty for SGD)
Hyper = dict  # name -> (K, 1) tensor


class Optimizer(NamedTuple):
    name: str
    hyperparams: tuple  # names the update reads, e.g. ("lr", "gamma")
    init: Callable[[tf.Tensor], State]  # params -> initial state
    update: Callable[[tf.Tensor, State, Hyper], tuple]  # (grads, state, hyper) -> (step, new state)
    effective_lr: Callable[[State, Hyper], tf.Tensor]  # per-coordinate lr, broadcastable to params


def _sgd_update(grads, state, hyper):
    return -hyper["lr"] * grads, state


def _momentum_init(params):
    return (tf.zeros_like(params),)


def _momentum_update(grads, state, hyper):
    (velocity,) = state
    velocity = hyper["beta"] * velocity + grads
    return -hyper["lr"] * velocity, (velocity,)


def _square_sum_init(params):
    return (tf.zeros_like(params),)


def _scaled_lr(state, hyper):
    (s,) = state
    return hyper["lr"] / tf.sqrt(s + EPS)


def _adagrad_update(grads, state, hyper):
    (s,) = state
    s = s + tf.square(grads)  # the sum never forgets, so lr / sqrt(s) only decays
    return -_scaled_lr((s,), hyper) * grads, (s,)


def _rmsprop_update(grads, state, hyper):
    (s,) = state
    gamma = hyper["gamma"]
    s = gamma * s + (1.0 - gamma) * tf.square(grads)  # leaky average: memory ~ 1 / (1 - gamma) steps
    return -_scaled_lr((s,), hyper) * grads, (s,)


def _constant_lr(state, hyper):
    return hyper["lr"]


OPTIMIZERS = {
    opt.name: opt
    for opt in (
        Optimizer("sgd", ("lr",), lambda params: (), _sgd_update, _constant_lr),
        Optimizer("momentum", ("lr", "beta"), _momentum_init, _momentum_update, _constant_lr),
        Optimizer("adagrad", ("lr",), _square_sum_init, _adagrad_update, _scaled_lr),
        Optimizer("rmsprop", ("lr", "gamma"), _square_sum_init, _rmsprop_update, _scaled_lr),
    )
}


def get(name: str) -> Optimizer:
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise PipelineError(
            f"unknown optimizer {name!r}: choose one of {', '.join(sorted(OPTIMIZERS))}"
        ) from None
