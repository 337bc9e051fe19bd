"""The optimizer registry: chapter 11's optimizers from scratch, as pure (init, update) pairs.

Like optax, each optimizer is a chain of a few shared transformations (pieces.py): a leaky
average, a bias correction, a learning-rate scale. Every function is pure: state in, state out.
Parameters are a (K, P) tensor, one row per configuration trained side by side; hyperparameters
arrive as (K, 1) tensors so each row can have its own. The effective learning rate, the factor a
gradient is multiplied by, is read straight from the state.

This module is the one place that knows an optimizer: its hyperparameters and what they are, its
Keras counterpart and a framework's defaults, its label. What is a knob (its book setting, its 2-D
demo setting, its search ranges) lives in params.yaml only. To add an optimizer, add one
`Optimizer(...)` to OPTIMIZERS (and any new hyperparameter to HYPERPARAMETERS), and its settings to
params.yaml's `book`, `evaluate.quadratic` and, for a new hyperparameter, `study.search_space`.
"""
from __future__ import annotations  # annotations name tf.Tensor without importing TensorFlow

from typing import Callable, NamedTuple, Optional

from pipeline.core import pieces
from pipeline.core.errors import PipelineError
from pipeline.core.pieces import tf

State = pieces.State
Hyper = pieces.Hyper


class Hyperparameter(NamedTuple):
    name: str
    description: str
    kind: str  # "lr": a positive step size; "decay": in (0, 1), remembers about 1 / (1 - value) steps


HYPERPARAMETERS = {h.name: h for h in (
    Hyperparameter("lr", "learning rate", "lr"),
    Hyperparameter("gamma", "RMSProp's decay of the squared-gradient average", "decay"),
    Hyperparameter("beta", "momentum's decay of the velocity", "decay"),
    Hyperparameter("beta1", "Adam's and Yogi's decay of the gradient average", "decay"),
    Hyperparameter("beta2", "Adam's and Yogi's decay of the squared-gradient average", "decay"),
    Hyperparameter("rho", "Adadelta's decay of both of its averages", "decay"),
)}


class Optimizer(NamedTuple):
    name: str
    label: str  # how figures and tables name it
    hyperparams: tuple  # names the update reads, e.g. ("lr", "gamma"); each in HYPERPARAMETERS
    init: Callable[[tf.Tensor], State]  # params -> initial state
    update: Callable[[tf.Tensor, State, Hyper], tuple]  # (grads, state, hyper) -> (step, new state)
    effective_lr: Callable[[State, Hyper], tf.Tensor]  # per-coordinate lr, broadcastable to params
    keras: Optional[Callable[[dict], object]] = None  # hyper -> the tf.keras optimizer with the same formula
    defaults: Optional[dict] = None  # a framework's default values of these (Keras's; Yogi: TensorFlow Addons'):
                                     # the evaluation's "framework defaults" runs, not a knob of ours
    color: str = "tab:gray"
    note: str = ""  # what its effective learning rate does and does not capture, for the report


def build(name: str, label: str, transform: pieces.Transform, **fields) -> Optimizer:
    """An Optimizer from a chain of transformations; its hyperparameters are those they read, lr first."""
    names = tuple(sorted(transform.hyperparams, key=lambda h: h != "lr"))
    return Optimizer(name, label, names, transform.init, transform.update, transform.scale, **fields)


def _keras(cls: str, **fixed):
    """hyper -> tf.keras.optimizers.<cls>(**fixed, keras_name=hyper[our_name]); Keras loads on first use."""
    def make(hyper):
        names = {"lr": "learning_rate", "gamma": "rho", "beta": "momentum", "beta1": "beta_1", "beta2": "beta_2",
                 "rho": "rho"}
        return getattr(tf.keras.optimizers, cls)(**fixed, **{names[k]: v for k, v in hyper.items()})
    return make


EPS = pieces.EPS
OPTIMIZERS = {opt.name: opt for opt in (
    build("sgd", "SGD", pieces.chain(pieces.scale_by_learning_rate()), defaults={"lr": 0.01}, keras=_keras("SGD"),
          color="tab:blue", note="constant: lr itself"),
    build("momentum", "Momentum", pieces.chain(pieces.trace("beta"), pieces.scale_by_learning_rate()),
          keras=_keras("SGD"), defaults={"lr": 0.01, "beta": 0.9},  # Keras's lr with the customary 0.9 (its default, 0, is plain SGD)
          color="tab:purple",
          note="lr, constant: the velocity sums about 1 / (1 - beta) past gradients, so the step is up to "
               "lr / (1 - beta) times the gradient, which a per-gradient rate does not capture"),
    build("adagrad", "Adagrad", pieces.chain(pieces.scale_by_sum_of_squares(), pieces.scale_by_learning_rate()),
          defaults={"lr": 0.001}, color="tab:orange",
          keras=_keras("Adagrad", initial_accumulator_value=0.0, epsilon=EPS),
          note="lr / sqrt(s + eps) with s the sum of all squared gradients: it only falls"),
    build("rmsprop", "RMSProp", pieces.chain(pieces.scale_by_rms("gamma"), pieces.scale_by_learning_rate()),
          color="tab:green", defaults={"lr": 0.001, "gamma": 0.9},
          keras=_keras("RMSprop", epsilon=EPS),
          note="lr / sqrt(s + eps) with s a leaky average: it levels off after about 1 / (1 - gamma) steps"),
    build("adadelta", "Adadelta", pieces.chain(pieces.scale_by_adadelta("rho"), pieces.descend()),
          color="tab:brown", defaults={"rho": 0.95},  # Keras's rho; its learning_rate 0.001 scales the book's (and Zeiler's) step of 1
          keras=_keras("Adadelta", learning_rate=1.0, epsilon=pieces.ADADELTA_EPS),
          note="sqrt(dx + eps) / sqrt(s + eps): no learning rate, the average of past steps sets the scale"),
    build("adam", "Adam", pieces.chain(pieces.scale_by_adam("beta1", "beta2"), pieces.scale_by_learning_rate()),
          defaults={"lr": 0.001, "beta1": 0.9, "beta2": 0.999}, color="tab:red", keras=_keras("Adam", epsilon=pieces.ADAM_EPS),
          note="lr / (sqrt(s_hat) + eps), bias-corrected: s_hat = s / (1 - beta2^t) is right from the first step"),
    build("yogi", "Yogi", pieces.chain(pieces.scale_by_adam("beta1", "beta2", second_moment=pieces.yogi_average,
                                                            eps=pieces.YOGI_EPS), pieces.scale_by_learning_rate()),
          defaults={"lr": 0.01, "beta1": 0.9, "beta2": 0.999}, color="tab:pink",
          note="as Adam's, but s moves towards g^2 by at most (1 - beta2) g^2 per step, so it cannot collapse"),
)}


def get(name: str) -> Optimizer:
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise PipelineError(
            f"unknown optimizer {name!r}: choose one of {', '.join(sorted(OPTIMIZERS))}"
        ) from None


def hyperparameter(name: str) -> Hyperparameter:
    try:
        return HYPERPARAMETERS[name]
    except KeyError:
        raise PipelineError(f"unknown hyperparameter {name!r}: known are {', '.join(HYPERPARAMETERS)}") from None
