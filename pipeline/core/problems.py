"""The problem registry: the one place that knows a problem, as optimizers.py is for optimizers.

A problem is a model trained on the prepared airfoil data: its layers, its initialiser, how its
reference floor is obtained, and which of the evaluation's dense analyses it can afford. Every stage
follows it. Its training protocol is a knob: params.yaml's `train` with the problem's changes in
`protocols.<name>` (config.protocol). To add a problem, add one `Problem(...)` to PROBLEMS.
"""
from typing import NamedTuple

from pipeline.core.errors import PipelineError


class Problem(NamedTuple):
    name: str
    label: str  # how the report names it
    hidden: tuple  # hidden layer widths; () is the book's linear regression (the engine's Gram fast path)
    activation: str  # "tanh" or "relu", between hidden layers
    floor: str  # "least_squares": the closed-form minimum; "best_known": the lowest loss any run found
    dense_analyses: bool  # landscape grid, random search, sampler race, Keras parity: affordable here
    convex: bool  # the report's claim about Adagrad contrasts convex and non-convex problems
    description: str  # one line for the report


PROBLEMS = {p.name: p for p in (
    Problem("linreg", "linear regression (convex)", (), "none", "least_squares", True, True,
            "the book's linear regression y = Xw + b, w ~ N(0, train.init_std), b = 0: convex least squares"),
    # Two tanh layers of 64 (4,609 parameters), Glorot-uniform weights and zero biases from the seed.
    # tanh rather than ReLU: a smooth loss, so the float64 check holds on every step (no kink a rounding
    # error can flip) and no unit dies. Its protocol (params.yaml, protocols.mlp) trains 10 epochs.
    Problem("mlp", "tanh network 5-64-64-1 (non-convex)", (64, 64), "tanh", "best_known", False, False,
            "a fully connected network 5 -> 64 -> 64 -> 1 with tanh, Glorot-uniform weights, zero biases"),
)}


def get(name: str) -> Problem:
    try:
        return PROBLEMS[name]
    except KeyError:
        raise PipelineError(f"unknown problem {name!r}: choose one of {', '.join(sorted(PROBLEMS))}") from None


def layer_sizes(name: str, n_features: int) -> tuple:
    """(inputs, hidden..., 1)."""
    return (n_features, *get(name).hidden, 1)


def lr_columns(name: str, n_features: int) -> tuple:
    """What the engine's effective-lr columns are: each coordinate of a linear model (w1.., b);
    on a network, each layer's 10%, 50% and 90% quantiles over its coordinates (weights and bias)."""
    if not get(name).hidden:
        return (*(f"w{i + 1}" for i in range(n_features)), "b")
    return tuple(f"layer{i + 1} {q}" for i in range(len(get(name).hidden) + 1) for q in ("p10", "median", "p90"))


def architecture(name: str, n_features: int) -> dict:
    """A problem's model as `train --json` prints it."""
    return {"layers": list(layer_sizes(name, n_features)), "activation": get(name).activation,
            "description": get(name).description}
