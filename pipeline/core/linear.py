"""The engine's loop for the book's linear regression: K configurations of y = X w + b at once.

The minibatch gradient is written out; the loss over all rows comes from the Gram matrix
[X, 1, y]^T [X, 1, y] / n in float64 (0.5 v^T G v with v = (w, b, -1)), at O(P^2) per configuration
instead of O(n P): the fast path of this workload (workloads.LinearRegression).
"""
import functools

import numpy as np

from pipeline.core import optimizers, schedules
from pipeline.core.tfimport import tf


@functools.lru_cache(maxsize=None)
def compiled(optimizer_name: str):
    opt = optimizers.get(optimizer_name)

    @tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
    def run(xs, y, gram, batches, step_rows, record_end, n_records, seed_index, theta0, hyper, lr_factor,
            schedule_index):
        # xs (n, P) features with a ones column; gram (P+1, P+1) = [xs, y]^T [xs, y] / n, float64
        # batches (T, S, B) row indices per seed; seed_index (K,); theta0 (S, P); hyper name -> (K, 1)
        # lr_factor (T, U) each schedule's factor per step; schedule_index (K,) each row's column
        # n_records: a Python int, so the record buffers' shapes are static. XLA needs them at
        # compile time and cannot derive them from record_end's values once T exceeds about a
        # million steps.
        k = tf.shape(seed_index)[0]
        theta = tf.gather(theta0, seed_index)
        scheduled, step_of, effective_lr = schedules.hooks(opt, hyper, lr_factor, schedule_index)
        lanes = tf.range(tf.shape(batches)[2])

        def step(t, theta, state):
            rows = tf.gather(batches[t], seed_index)  # (K, B)
            xb, yb = tf.gather(xs, rows), tf.gather(y, rows)  # (K, B, P), (K, B)
            count = step_rows[t]
            mask = tf.cast(lanes < count, tf.float32)
            residual = (tf.reduce_sum(xb * theta[:, None, :], axis=2) - yb) * mask
            grads = tf.reduce_sum(residual[:, :, None] * xb, axis=1) / tf.cast(count, tf.float32)
            delta, state = opt.update(grads, state, scheduled(hyper, t))
            return t + 1, theta + step_of(delta, t), state

        def segment(r, t, theta, state, losses, eff_lr):
            # The steps up to the next record, then the record: loss and effective lr are computed
            # once per record (every 20 steps in the book's protocol), not once per step.
            t, theta, state = tf.while_loop(lambda t, *_: t < record_end[r], step, (t, theta, state))
            # Loss over all rows from the Gram matrix: 0.5 * v^T G v with v = (w, b, -1) equals
            # mean((X w + b - y)^2) / 2, at O(P^2) per configuration instead of O(n P).
            v = tf.concat([tf.cast(theta, tf.float64), -tf.ones((k, 1), tf.float64)], axis=1)
            # Elementwise, not matmul: a dot kernel may sum in a K-dependent order, and one batched
            # call must equal K single calls bit for bit.
            loss = 0.5 * tf.reduce_sum(v[:, :, None] * gram * v[:, None, :], axis=[1, 2])
            lr_now = tf.broadcast_to(effective_lr(state, t - 1), tf.shape(theta))
            return r + 1, t, theta, state, losses.write(r, loss), eff_lr.write(r, lr_now)

        records = (tf.TensorArray(tf.float64, size=n_records), tf.TensorArray(tf.float32, size=n_records))
        _, _, theta, _, losses, eff_lr = tf.while_loop(
            lambda r, *_: r < n_records, segment, (tf.constant(0), tf.constant(0), theta, opt.init(theta), *records)
        )
        return theta, losses.stack(), eff_lr.stack()

    return run


def gram_matrix(features: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[X, 1, y]^T [X, 1, y] / n in float64: the training loss of any (w, b) is 0.5 v^T G v."""
    z = np.column_stack([features, np.ones(len(target)), target]).astype(np.float64)
    return z.T @ z / len(z)


def loss(gram: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Training loss of each row of theta (K, P), from the Gram matrix."""
    v = np.concatenate([theta.astype(np.float64), -np.ones((len(theta), 1))], axis=1)
    return 0.5 * np.einsum("ki,ij,kj->k", v, gram, v)
