"""What a seed decides: every epoch's batches (a workload's initial parameters: problems.py).

TensorFlow's stateless RNG, keyed by the seed alone, so configurations that share a seed see the
same start and the same batches (common random numbers), whatever problem or optimizer they train.
Cached: studies reuse the same few seeds for every trial.
"""
import functools
import math

import numpy as np

from pipeline.core.config import TrainParams
from pipeline.core.tfimport import tf


@functools.lru_cache(maxsize=4096)
def batch_order(seed: int, n_rows: int, protocol: TrainParams) -> np.ndarray:
    """Each epoch's permutation of the rows from stream (seed, epoch + 1), as (epochs, steps, batch):
    every problem trained with a seed sees the same batches. With drop_remainder an epoch's last
    n_rows mod batch_size rows of the permutation sit it out, as tf.data's drop_remainder does."""
    b = protocol.batch_size
    steps = n_rows // b if protocol.drop_remainder else math.ceil(n_rows / b)
    epochs = []
    for epoch in range(protocol.epochs):
        keys = tf.random.stateless_uniform((n_rows,), seed=(seed, epoch + 1))
        perm = tf.argsort(keys, stable=True).numpy().astype(np.int32)
        if protocol.drop_remainder:
            epochs.append(perm[:steps * b].reshape(steps, b))
        else:
            epochs.append(np.pad(perm, (0, steps * b - n_rows)).reshape(steps, b))  # pad rows are masked
    return np.stack(epochs)
