"""What a seed decides: a model's initial parameters and every epoch's batches.

TensorFlow's stateless RNG, keyed by the seed alone, so configurations that share a seed see the
same start and the same batches (common random numbers), whatever problem or optimizer they train.
Cached: studies reuse the same few seeds for every trial.
"""
import functools
import math

import numpy as np

from pipeline.core import network, problems
from pipeline.core.config import TrainParams
from pipeline.core.data import Dataset
from pipeline.core.tfimport import tf


@functools.lru_cache(maxsize=4096)
def seed_stream(seed: int, n_rows: int, n_features: int, protocol: TrainParams):
    """What a seed decides for the linear model: initial parameters (P,) and batch row indices
    (epochs, steps, batch). Cached: studies reuse the same few seeds for every trial."""
    w = protocol.init_std * tf.random.stateless_normal((n_features,), seed=(seed, 0), dtype=tf.float32)
    if protocol.init == "zeros":
        w = tf.zeros_like(w)
    theta0 = np.concatenate([w.numpy(), [0.0]]).astype(np.float32)
    return theta0, batch_order(seed, n_rows, protocol)


@functools.lru_cache(maxsize=4096)
def batch_order(seed: int, n_rows: int, protocol: TrainParams) -> np.ndarray:
    """Each epoch's permutation of the rows from stream (seed, epoch + 1), as (epochs, steps, batch):
    every problem trained with a seed sees the same batches."""
    steps, b = math.ceil(n_rows / protocol.batch_size), protocol.batch_size
    epochs = []
    for epoch in range(protocol.epochs):
        keys = tf.random.stateless_uniform((n_rows,), seed=(seed, epoch + 1))
        perm = tf.argsort(keys, stable=True).numpy().astype(np.int32)
        epochs.append(np.pad(perm, (0, steps * b - n_rows)).reshape(steps, b))  # pad rows are masked
    return np.stack(epochs)


@functools.lru_cache(maxsize=4096)
def network_stream(seed: int, n_rows: int, sizes: tuple, protocol: TrainParams):
    """What a seed decides for a network: its Glorot initial parameters and the batches."""
    return network.initial_params(seed, sizes), batch_order(seed, n_rows, protocol)


def initial_layers(dataset: Dataset, seed: int, protocol: TrainParams, problem: str) -> list:
    """A seed's initial parameters layer by layer, weights (fan_in x fan_out) then bias: what anyone
    needs to recompute a run (with the batches, batch_order)."""
    n_rows, n_features = dataset.features.shape
    sizes = problems.layer_sizes(problem, n_features)
    theta0 = (network_stream(seed, n_rows, sizes, protocol) if problems.get(problem).hidden
              else seed_stream(seed, n_rows, n_features, protocol))[0]
    return [{"weights": theta0[w0:b0].reshape(sizes[i], sizes[i + 1]).tolist(), "bias": theta0[b0:end].tolist()}
            for i, (w0, b0, end) in enumerate(network.layer_slices(sizes))]
