"""The shared pieces chapter 11's optimizers are built from, in the style of optax's transforms.

A Transform maps gradients to updates: `init(params) -> state`, `update(u, state, hyper) ->
(u, state)`, and `scale(state, hyper)`, the per-coordinate factor it applies to a gradient as read
from its state (None: it rescales nothing, or, like momentum's trace, not per gradient). `chain`
runs transforms in turn; its effective learning rate is the product of their scales. Formulas are
the book's (D2L 11.6-11.10): state starts at 0, eps inside the square root unless said otherwise.
"""
from __future__ import annotations

import importlib
from typing import Callable, NamedTuple, Optional


class _LazyTensorFlow:
    """TensorFlow, imported on first use: the data stages and params validation read the
    registry but never train, and should not pay TensorFlow's seconds-long import."""

    def __getattr__(self, name):
        return getattr(importlib.import_module("pipeline.core.tfimport").tf, name)


tf = _LazyTensorFlow()

EPS = 1e-6  # the book's epsilon for Adagrad and RMSProp, inside the square root
ADADELTA_EPS = 1e-5  # the book's, inside both square roots
ADAM_EPS = 1e-6  # the book's, added to sqrt(s_hat)
YOGI_EPS = 1e-3  # the book's

Hyper = dict  # name -> (K, 1) tensor


# Each transform's state, named like optax's (ScaleByAdamState): tensors shaped like the parameters.
class EmptyState(NamedTuple):
    """A transform that keeps nothing (the learning-rate scale, the descent step)."""


class TraceState(NamedTuple):
    velocity: "tf.Tensor"  # momentum's v


class SquaresState(NamedTuple):
    s: "tf.Tensor"  # Adagrad's sum, RMSProp's leaky average of squared gradients


class AdadeltaState(NamedTuple):
    s: "tf.Tensor"  # leaky average of squared gradients
    dx: "tf.Tensor"  # leaky average of squared steps


class AdamState(NamedTuple):
    t: "tf.Tensor"  # steps taken, for the bias correction: (K, 1)
    v: "tf.Tensor"  # leaky average of gradients (momentum)
    s: "tf.Tensor"  # leaky average of squared gradients (Yogi's own average for Yogi)


State = NamedTuple  # a transform's state above, or a chain's tuple of them


class Transform(NamedTuple):
    hyperparams: tuple  # the hyperparameters update reads
    init: Callable
    update: Callable
    scale: Optional[Callable] = None


def leaky_average(average, x, decay):
    """The book's leaky average: remembers about 1 / (1 - decay) steps."""
    return decay * average + (1.0 - decay) * x


def yogi_average(average, x, decay):
    """Yogi's second moment: moves towards x by (1 - decay) x at most, never by a multiple of average."""
    return average + (1.0 - decay) * x * tf.sign(x - average)


def bias_corrected(average, decay, t):
    """A leaky average started at 0, divided by the weight its terms sum to after t steps."""
    return average / (1.0 - decay ** t)


def _zeros(params):
    return tf.zeros_like(params)


def scale_by_learning_rate() -> Transform:
    """The descent step: -lr * u."""
    return Transform(("lr",), lambda params: EmptyState(), lambda u, state, h: (-h["lr"] * u, state),
                     lambda state, h: h["lr"])


def descend() -> Transform:
    """The descent step without a learning rate (Adadelta's): -u."""
    return Transform((), lambda params: EmptyState(), lambda u, state, h: (-u, state))


def trace(decay: str) -> Transform:
    """Momentum's velocity v = decay * v + g (no 1 - decay factor: the book's heavy ball)."""
    def update(u, state, h):
        v = h[decay] * state.velocity + u
        return v, TraceState(v)
    return Transform((decay,), lambda params: TraceState(_zeros(params)), update)


def _preconditioner(accumulate, hyperparams: tuple, eps: float) -> Transform:
    """u / sqrt(s + eps), s accumulated from u^2 by accumulate(s, u^2, h)."""
    scale = lambda state, h: 1.0 / tf.sqrt(state.s + eps)  # noqa: E731

    def update(u, state, h):
        state = SquaresState(accumulate(state.s, tf.square(u), h))
        return u * scale(state, h), state
    return Transform(hyperparams, lambda params: SquaresState(_zeros(params)), update, scale)


def scale_by_sum_of_squares(eps: float = EPS) -> Transform:
    """Adagrad: s is the sum of every squared gradient, so lr / sqrt(s) only decays."""
    return _preconditioner(lambda s, g2, h: s + g2, (), eps)


def scale_by_rms(decay: str, eps: float = EPS) -> Transform:
    """RMSProp: s is a leaky average of squared gradients, so its rate levels off."""
    return _preconditioner(lambda s, g2, h: leaky_average(s, g2, h[decay]), (decay,), eps)


def scale_by_adadelta(rho: str, eps: float = ADADELTA_EPS) -> Transform:
    """Adadelta: g' = sqrt(dx + eps) / sqrt(s + eps) * g, with dx a leaky average of past g'^2."""
    scale = lambda state, h: tf.sqrt(state.dx + eps) / tf.sqrt(state.s + eps)  # noqa: E731

    def update(u, state, h):
        s = leaky_average(state.s, tf.square(u), h[rho])
        step = u * scale(AdadeltaState(s, state.dx), h)
        return step, AdadeltaState(s, leaky_average(state.dx, tf.square(step), h[rho]))
    return Transform((rho,), lambda params: AdadeltaState(_zeros(params), _zeros(params)), update, scale)


def scale_by_adam(beta1: str, beta2: str, second_moment=leaky_average, eps: float = ADAM_EPS) -> Transform:
    """Adam (and Yogi, with its own second moment): v_hat / (sqrt(s_hat) + eps), both averages
    bias-corrected with the step count t, which starts at 1."""
    def scale(state, h):
        return 1.0 / (tf.sqrt(bias_corrected(state.s, h[beta2], state.t)) + eps)

    def update(u, state, h):
        state = AdamState(t=state.t + 1.0, v=leaky_average(state.v, u, h[beta1]),
                          s=second_moment(state.s, tf.square(u), h[beta2]))
        return bias_corrected(state.v, h[beta1], state.t) * scale(state, h), state
    # t is one count per configuration, (K, 1): a per-coordinate copy would cost a power per parameter.
    return Transform((beta1, beta2), lambda params: AdamState(_zeros(params[:, :1]), _zeros(params), _zeros(params)),
                     update, scale)


def chain(*transforms: Transform) -> Transform:
    """The transforms in turn; the effective learning rate is the product of their scales."""
    names = tuple(dict.fromkeys(h for t in transforms for h in t.hyperparams))

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(u, state, h):
        new = []
        for t, s in zip(transforms, state):
            u, s = t.update(u, s, h)
            new.append(s)
        return u, tuple(new)

    def scale(state, h):
        factor = 1.0
        for t, s in zip(transforms, state):
            if t.scale is not None:
                factor = factor * t.scale(s, h)
        return factor
    return Transform(names, init, update, scale)
