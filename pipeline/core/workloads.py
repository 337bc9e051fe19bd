"""What a problem is: a workload. Like AlgoPerf's, it owns its data, its model and what the engine
and the stages ask of it: its parameters and their initialiser from the seed, its compiled training
loop (forward pass, gradient, loss over all rows), its effective-lr columns, its floor, its held-out
scores where it has a split, its label. The engine asks and never branches on a kind of problem.
Here: the base and the two kinds on the airfoil data (the book's linear regression, a network);
deep_quadratic.py and classifier.py hold their own. The registry is problems.py.
TensorFlow is imported only when a loop is asked for: params validation reads the registry.
"""
import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np



@dataclass(frozen=True)
class Workload:
    """What every problem answers; the engine and the stages only ask."""

    name: str
    label: str  # how the report names it
    description: str  # one line for the report
    floor: str  # "least_squares": the closed-form minimum; "best_known": the lowest loss any run found
    dense_analyses: bool  # landscape grid, random search, sampler race, Keras parity: affordable here
    convex: bool  # the report's claim about Adagrad contrasts convex and non-convex problems

    kind: ClassVar[str]  # "linear" or "network": how the report draws its effective learning rates
    uses_train_init: ClassVar[bool]  # whether train.init and train.init_std start it
    concurrent: ClassVar[bool]  # whether its optimizers train side by side (each compiles for seconds)

    floor_words: ClassVar[str] = ""  # a closed-form floor's name ("least-squares"); none for best_known
    has_split: ClassVar[bool] = False  # whether it holds out data to score the trained parameters on
    held_out_names: ClassVar[tuple] = ()  # the held-out scores its loop records (TrainResult.held_out)

    def held_out_metrics(self, theta: np.ndarray) -> dict:
        """metric -> (K,) scores of the parameters on the held-out data (where has_split)."""
        raise NotImplementedError

    def data(self, prepared):
        """Its training data: the prepared airfoil data, unless the workload brings its own."""
        return prepared

    def data_record(self, dataset) -> dict:
        """What anyone needs to rebuild its data (`train --json`): the split and the preprocessing."""
        stats = dataset.stats
        return {"source": "airfoil_self_noise.dat: the first data.n_rows rows train, none held out",
                "train_rows": list(range(stats["rows"])), "held_out_rows": [],
                "preprocessing": {"standardized_over": f"all {stats['rows_in_file']} rows of the file (as the book)",
                                  "columns": stats["columns"], "means": stats["means"], "stds": stats["stds"]}}

    def sizes(self, n_features: int) -> tuple:
        """(inputs, hidden..., 1): the layers of its parameter vector (weights row-major, then bias)."""
        raise NotImplementedError

    def stream(self, seed: int, n_rows: int, n_features: int, protocol) -> tuple:
        """What a seed decides: initial parameters (P,) and every epoch's batches (epochs, steps, batch)."""
        from pipeline.core import randomness

        return self.initial_params(seed, n_features, protocol), randomness.batch_order(seed, n_rows, protocol)

    def initial_layers(self, theta0: np.ndarray, n_features: int) -> list:
        """Initial parameters layer by layer, weights (fan_in x fan_out) then bias (`train --json`)."""
        from pipeline.core import network

        sizes = self.sizes(n_features)
        return [{"weights": theta0[w0:b0].reshape(sizes[i], sizes[i + 1]).tolist(), "bias": theta0[b0:end].tolist()}
                for i, (w0, b0, end) in enumerate(network.layer_slices(sizes))]

    def architecture(self, n_features: int) -> dict:
        return {"layers": list(self.sizes(n_features)), "activation": self.activation_name,
                "description": self.description}


@dataclass(frozen=True)
class LinearRegression(Workload):
    """The book's y = X w + b, w ~ N(0, train.init_std) (or 0), b = 0; the Gram matrix gives the loss
    over all rows at O(P^2) (linear.py)."""

    kind: ClassVar[str] = "linear"
    uses_train_init: ClassVar[bool] = True
    concurrent: ClassVar[bool] = False
    activation_name: ClassVar[str] = "none"
    floor_words: ClassVar[str] = "least-squares"

    def closed_floor(self, dataset) -> float:
        return dataset.stats["least_squares"]["loss"]  # prepare's least-squares solution

    def sizes(self, n_features: int) -> tuple:
        return (n_features, 1)

    def initial_params(self, seed: int, n_features: int, protocol) -> np.ndarray:
        return _linear_start(seed, n_features, protocol.init, protocol.init_std)

    def init_label(self, train) -> str:
        return f"{train.init} (std {train.init_std:g})"

    def lr_columns(self, n_features: int) -> tuple:
        """Each coordinate's effective lr: w1.., b."""
        return (*(f"w{i + 1}" for i in range(n_features)), "b")

    def rate_layers(self, columns: tuple) -> dict:
        """layer -> the column of its median coordinate's rate (None: the median over all columns)."""
        return {"all": None}

    def loop(self, optimizer: str, n_features: int):
        from pipeline.core import linear

        return linear.compiled(optimizer)

    def loop_data(self, dataset) -> tuple:
        from pipeline.core import linear
        from pipeline.core.tfimport import tf

        n_rows = len(dataset.target)
        xs = np.concatenate([dataset.features, np.ones((n_rows, 1), np.float32)], axis=1)
        return tf.constant(xs), tf.constant(dataset.target), tf.constant(linear.gram_matrix(dataset.features,
                                                                                           dataset.target))

    def starting_loss(self, dataset, seeds, protocol) -> np.ndarray:
        from pipeline.core import linear

        n_features = dataset.features.shape[1]
        starts = np.stack([self.initial_params(int(s), n_features, protocol) for s in seeds])
        return linear.loss(linear.gram_matrix(dataset.features, dataset.target), starts)

    def rows_per_call(self, k: int, cores: int) -> int:
        """All K in one call, padded to a power of two so XLA compiles a handful of shapes."""
        return 1 << max(0, (k - 1).bit_length())

    def columns(self, rates: np.ndarray, n_features: int) -> np.ndarray:
        return rates


@functools.lru_cache(maxsize=4096)
def _linear_start(seed: int, n_features: int, init: str, init_std: float) -> np.ndarray:
    """w ~ N(0, init_std) from stream (seed, 0), or 0; b = 0. Cached: studies reuse a few seeds."""
    from pipeline.core.tfimport import tf

    w = init_std * tf.random.stateless_normal((n_features,), seed=(seed, 0), dtype=tf.float32)
    if init == "zeros":
        w = tf.zeros_like(w)
    return np.concatenate([w.numpy(), [0.0]]).astype(np.float32)


@dataclass(frozen=True)
class Network(Workload):
    """A fully connected network with Glorot-uniform weights and zero biases from the seed (network.py)."""

    hidden: tuple = ()  # hidden layer widths
    activation: str = "tanh"  # "tanh" or "relu", between hidden layers

    kind: ClassVar[str] = "network"
    uses_train_init: ClassVar[bool] = False
    concurrent: ClassVar[bool] = True
    loss: ClassVar[str] = "squared"  # network.py's: "squared" on one output, or "softmax" over classes

    @property
    def activation_name(self) -> str:
        return self.activation

    def sizes(self, n_features: int) -> tuple:
        return (n_features, *self.hidden, 1)

    def initial_params(self, seed: int, n_features: int, protocol) -> np.ndarray:
        return _network_start(seed, self.sizes(n_features))

    def init_label(self, train) -> str:
        return "Glorot uniform"

    def lr_columns(self, n_features: int) -> tuple:
        """Each layer's 10%, 50% and 90% quantiles of its coordinates' rates (weights and bias)."""
        return tuple(f"layer{i + 1} {q}" for i in range(len(self.hidden) + 1) for q in ("p10", "median", "p90"))

    def rate_layers(self, columns: tuple) -> dict:
        return {c.split()[0]: j for j, c in enumerate(columns) if c.endswith("median")}

    def loop(self, optimizer: str, n_features: int):
        from pipeline.core import network

        return network.compiled(optimizer, self.sizes(n_features), self.activation, self.loss)

    def loop_data(self, dataset) -> tuple:
        from pipeline.core.tfimport import tf

        return tf.constant(dataset.features), tf.constant(dataset.target)

    def starting_loss(self, dataset, seeds, protocol) -> np.ndarray:
        from pipeline.core import network

        return network.starting_loss(dataset.features, dataset.target, seeds, self.sizes(dataset.features.shape[1]),
                                     self.activation, self.loss)

    def rows_per_call(self, k: int, cores: int) -> int:
        """One chunk per core, 2 rows or more: a loop runs on one core whatever K is (network.py: why 2)."""
        return max(2, -(-k // min(cores, max(1, (k + 1) // 2))))

    def columns(self, rates: np.ndarray, n_features: int) -> np.ndarray:
        from pipeline.core import network

        return network.layer_bands(rates, self.sizes(n_features))


@functools.lru_cache(maxsize=4096)
def _network_start(seed: int, sizes: tuple) -> np.ndarray:
    from pipeline.core import network

    return network.initial_params(seed, sizes)
