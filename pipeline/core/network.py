"""The engine's loop for a network: K configurations of a fully connected model at once.

Parameters are one flat (K, P) tensor, layer by layer (weights row-major, then bias), so every
optimizer of the registry runs on it unchanged. The forward and backward passes are written out
(batched matmuls over K, rows never mix): what the float64 check in the tests recomputes by hand.
XLA computes a batched matmul the same way for every K of 2 or more, but a batch of one by another
kernel, so the engine never runs a network with K = 1 (it pads to 2): one batched call equals K
single calls bit for bit.
The loss over all rows and each layer's effective-learning-rate quantiles are taken once per
record, not per step.
"""
import functools
import math

import numpy as np

from pipeline.core import optimizers
from pipeline.core.tfimport import tf

QUANTILES = (0.1, 0.5, 0.9)  # per layer: the 10-90% band and the median of its coordinates' effective lr


def layer_slices(sizes: tuple) -> list:
    """(weights start, bias start, end) of each layer in the flat parameter vector."""
    out, at = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        out.append((at, at + fan_in * fan_out, at + fan_in * fan_out + fan_out))
        at = out[-1][2]
    return out


def initial_params(seed: int, sizes: tuple) -> np.ndarray:
    """Glorot-uniform weights (stream (seed, 1000 + layer)), zero biases, as one flat float32 vector."""
    parts = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        w = tf.random.stateless_uniform((fan_in, fan_out), seed=(seed, 1000 + i), minval=-limit, maxval=limit)
        parts += [w.numpy().reshape(-1), np.zeros(fan_out, np.float32)]
    return np.concatenate(parts).astype(np.float32)


def numpy_loss(features: np.ndarray, target: np.ndarray, theta: np.ndarray, sizes: tuple, activation: str):
    """(K,) training loss mean((y_hat - y)^2) / 2 of each row of theta, in float64."""
    act = np.tanh if activation == "tanh" else (lambda z: np.maximum(z, 0.0))
    theta = theta.astype(np.float64)
    h = np.broadcast_to(features.astype(np.float64), (len(theta), *features.shape))
    slices = layer_slices(sizes)
    for i, (w0, b0, end) in enumerate(slices):
        w = theta[:, w0:b0].reshape(len(theta), sizes[i], sizes[i + 1])
        h = h @ w + theta[:, None, b0:end]
        if i < len(slices) - 1:
            h = act(h)
    return 0.5 * ((h[..., 0] - target) ** 2).mean(axis=1)


def _layers(theta, sizes):
    return [(tf.reshape(theta[:, w0:b0], (-1, sizes[i], sizes[i + 1])), theta[:, b0:end])
            for i, (w0, b0, end) in enumerate(layer_slices(sizes))]


def _quantiles(values, q: float):
    """np.quantile's linear rule along axis 1 of sorted (K, m) values."""
    pos = q * (values.shape[1] - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[:, lo] + (values[:, hi] - values[:, lo]) * (pos - lo)


@functools.lru_cache(maxsize=None)
def compiled(optimizer_name: str, sizes: tuple, activation: str):
    opt = optimizers.get(optimizer_name)
    act = tf.tanh if activation == "tanh" else tf.nn.relu
    slices = layer_slices(sizes)

    def derivative(h):  # of the activation, from its output
        return 1.0 - h * h if activation == "tanh" else tf.cast(h > 0, h.dtype)

    @tf.function(jit_compile=True, reduce_retracing=True)
    def run(x, y, batches, step_rows, record_end, n_records, seed_index, theta0, hyper):
        # x (n, F), y (n,); batches (T, S, B); seed_index (K,); theta0 (S, P); hyper name -> (K, 1)
        theta = tf.gather(theta0, seed_index)
        lanes = tf.range(tf.shape(batches)[2])
        y64 = tf.cast(y, tf.float64)

        def step(t, theta, state):
            rows = tf.gather(batches[t], seed_index)  # (K, B)
            h, yb = tf.gather(x, rows), tf.gather(y, rows)
            count = step_rows[t]
            layers, outputs = _layers(theta, sizes), [h]
            for i, (w, b) in enumerate(layers):
                h = tf.matmul(h, w) + b[:, None, :]
                if i < len(layers) - 1:
                    h = act(h)
                outputs.append(h)
            dz = ((h[..., 0] - yb) * tf.cast(lanes < count, tf.float32) / tf.cast(count, tf.float32))[..., None]
            grads = []
            for i in reversed(range(len(layers))):
                grads = [tf.reshape(tf.matmul(outputs[i], dz, transpose_a=True), (tf.shape(dz)[0], -1)),
                         tf.reduce_sum(dz, axis=1)] + grads
                if i > 0:
                    dz = tf.matmul(dz, layers[i][0], transpose_b=True) * derivative(outputs[i])
            delta, state = opt.update(tf.concat(grads, axis=1), state, hyper)
            return t + 1, theta + delta, state

        def segment(r, t, theta, state, losses, eff_lr):
            t, theta, state = tf.while_loop(lambda t, *_: t < record_end[r], step, (t, theta, state))
            h = x[None]
            layers = _layers(theta, sizes)
            for i, (w, b) in enumerate(layers):
                h = tf.matmul(h, w) + b[:, None, :]
                if i < len(layers) - 1:
                    h = act(h)
            loss = 0.5 * tf.reduce_mean(tf.square(tf.cast(h[..., 0], tf.float64) - y64), axis=1)
            lr_now = tf.broadcast_to(opt.effective_lr(state, hyper), tf.shape(theta))
            bands = []
            for w0, _, end in slices:
                ordered = tf.sort(lr_now[:, w0:end], axis=1)
                bands += [_quantiles(ordered, q) for q in QUANTILES]
            return r + 1, t, theta, state, losses.write(r, loss), eff_lr.write(r, tf.stack(bands, axis=1))

        records = (tf.TensorArray(tf.float64, size=n_records), tf.TensorArray(tf.float32, size=n_records))
        _, _, theta, _, losses, eff_lr = tf.while_loop(
            lambda r, *_: r < n_records, segment, (tf.constant(0), tf.constant(0), theta, opt.init(theta), *records)
        )
        return theta, losses.stack(), eff_lr.stack()

    return run
