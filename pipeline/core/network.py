"""The engine's loop for a network: K configurations of a fully connected model at once.

Parameters come and go as one flat (K, P) tensor, layer by layer (weights row-major, then bias);
inside the loop each weight and bias is its own (K, n) tensor, so every optimizer of the registry
runs on them unchanged. The forward and backward passes are written out (batched matmuls over K,
rows never mix): what the float64 check in the tests recomputes by hand.
XLA computes a batched matmul the same way for every K of 2 or more, but a batch of one by another
kernel, so the engine never runs a network with K = 1 (it pads to 2): one batched call equals K
single calls bit for bit. The engine splits K into one call per core (workloads.Network.rows_per_call).
The loss over all rows and every coordinate's effective learning rate are taken once per record,
not per step; each layer's quantiles of the rates are then taken on the host (layer_bands): XLA's
sort on the CPU took a fifth to a quarter of a whole training call.
"""
import functools
import hashlib
import math

import numpy as np

from pipeline.core import optimizers, schedules
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


def numpy_outputs(features: np.ndarray, theta: np.ndarray, sizes: tuple, activation: str) -> np.ndarray:
    """(K, n, outputs) the network's outputs for each row of theta, in float64."""
    act = np.tanh if activation == "tanh" else (lambda z: np.maximum(z, 0.0))
    theta = theta.astype(np.float64)
    h = np.broadcast_to(features.astype(np.float64), (len(theta), *features.shape))
    slices = layer_slices(sizes)
    for i, (w0, b0, end) in enumerate(slices):
        w = theta[:, w0:b0].reshape(len(theta), sizes[i], sizes[i + 1])
        h = h @ w + theta[:, None, b0:end]
        if i < len(slices) - 1:
            h = act(h)
    return h


def numpy_loss(features: np.ndarray, target: np.ndarray, theta: np.ndarray, sizes: tuple, activation: str,
               loss: str = "squared"):
    """(K,) loss of each row of theta over the rows, in float64: mean((y_hat - y)^2) / 2, or for a
    classifier ("softmax", target the class) the mean softmax cross-entropy."""
    h = numpy_outputs(features, theta, sizes, activation)
    if loss == "squared":
        return 0.5 * ((h[..., 0] - target) ** 2).mean(axis=1)
    top = h.max(axis=2, keepdims=True)
    log_norm = np.log(np.exp(h - top).sum(axis=2)) + top[..., 0]
    return (log_norm - np.take_along_axis(h, target.astype(int)[None, :, None], axis=2)[..., 0]).mean(axis=1)


def numpy_accuracy(features: np.ndarray, target: np.ndarray, theta: np.ndarray, sizes: tuple, activation: str):
    """(K,) a classifier's share of rows whose largest output is their class."""
    return (numpy_outputs(features, theta, sizes, activation).argmax(axis=2) == target.astype(int)).mean(axis=1)


_START_LOSS = {}  # (data digest, seed, sizes, activation, loss) -> float64 loss at the seed's initial parameters


def starting_loss(features: np.ndarray, target: np.ndarray, seeds, sizes: tuple, activation: str,
                  loss: str = "squared") -> np.ndarray:
    """(len(seeds),) numpy_loss at each seed's initial parameters, computed once per process: a
    study's trials reuse the same few seeds, and it cost 20 ms of a 150 ms trial."""
    digest = hashlib.sha1(features.tobytes() + target.tobytes()).digest()
    keys = [(digest, int(s), sizes, activation, loss) for s in seeds]
    todo = sorted({k[1] for k in keys if k not in _START_LOSS})
    if todo:
        losses = numpy_loss(features, target, np.stack([initial_params(s, sizes) for s in todo]), sizes, activation,
                            loss)
        _START_LOSS.update({(digest, seed, sizes, activation, loss): v for seed, v in zip(todo, losses)})
    return np.array([_START_LOSS[k] for k in keys])


def layer_bands(rates: np.ndarray, sizes: tuple) -> np.ndarray:
    """(..., P) effective learning rate of every coordinate, to (..., QUANTILES per layer): each
    layer's quantiles over its weights and bias, by np.quantile's linear rule, in float32. By hand
    because np.quantile works in float64 and took four times as long (31 against 7.5 ms at K = 32)."""
    return bands(rates, [(w0, end) for w0, _, end in layer_slices(sizes)])


def bands(rates: np.ndarray, spans: list) -> np.ndarray:
    """(..., P) rates to (..., QUANTILES per span): each [start, end) span's quantiles (layer_bands)."""
    out = []
    for w0, end in spans:
        ordered = np.sort(rates[..., w0:end], axis=-1)
        for q in QUANTILES:
            pos = q * (end - w0 - 1)
            lo, hi = math.floor(pos), math.ceil(pos)
            out.append(ordered[..., lo] + (ordered[..., hi] - ordered[..., lo]) * np.float32(pos - lo))
    return np.stack(out, axis=-1)


@functools.lru_cache(maxsize=None)
def compiled(optimizer_name: str, sizes: tuple, activation: str, loss: str = "squared", held_out: bool = False):
    """The loop: squared loss on one output, or ("softmax") cross-entropy on one output per class.
    held_out: the loop takes held-out rows after the training rows, (x, y, x_held, y_held, ...), and
    records their loss and accuracy (a classifier's) at every record beside the training loss."""
    opt = optimizers.get(optimizer_name)
    act = tf.tanh if activation == "tanh" else tf.nn.relu
    shapes = list(zip(sizes[:-1], sizes[1:]))

    def derivative(h):  # of the activation, from its output
        return 1.0 - h * h if activation == "tanh" else tf.cast(h > 0, h.dtype)

    def forward(h, params):
        """The output and every layer's input; params are (weights (K, in * out), bias (K, out)) per layer."""
        inputs = []
        for i, (fan_in, fan_out) in enumerate(shapes):
            inputs.append(h)
            h = tf.matmul(h, tf.reshape(params[2 * i], (-1, fan_in, fan_out))) + params[2 * i + 1][:, None, :]
            if i < len(shapes) - 1:
                h = act(h)
        return h, inputs

    def scored(h, y):
        """(K,) the loss of outputs h (K, n, outputs) against y, in float64."""
        if loss == "squared":
            return 0.5 * tf.reduce_mean(tf.square(tf.cast(h[..., 0], tf.float64) - tf.cast(y, tf.float64)), axis=1)
        h64 = tf.cast(h, tf.float64)
        picked = tf.reduce_sum(h64 * tf.one_hot(tf.cast(y, tf.int32), sizes[-1], dtype=tf.float64), axis=2)
        return tf.reduce_mean(tf.reduce_logsumexp(h64, axis=2) - picked, axis=1)

    def train(x, y, held, batches, step_rows, record_end, n_records, seed_index, theta0, hyper, lr_factor,
              schedule_index):
        # x (n, F), y (n,); held () or (x_held, y_held); batches (T, S, B); seed_index (K,); theta0 (S, P);
        # hyper name -> (K, 1); lr_factor (T, U) each schedule's factor per step; schedule_index (K,) each row's column
        theta = tf.gather(theta0, seed_index)
        scheduled, step_of, effective_lr = schedules.hooks(opt, hyper, lr_factor, schedule_index)
        # Each weight and bias its own tensor with its own optimizer state: the optimizers are
        # elementwise, so this equals one flat vector bit for bit, without a slice and a concat per step.
        params = tuple(theta[:, a:b] for w0, b0, end in layer_slices(sizes) for a, b in ((w0, b0), (b0, end)))
        lanes = tf.range(tf.shape(batches)[2])

        def step(t, params, states):
            rows = tf.gather(batches[t], seed_index)  # (K, B)
            count = step_rows[t]
            h, inputs = forward(tf.gather(x, rows), params)
            if loss == "squared":
                dz = ((h[..., 0] - tf.gather(y, rows)) * tf.cast(lanes < count, tf.float32)
                      / tf.cast(count, tf.float32))[..., None]
            else:  # d(cross-entropy)/d(logits) = softmax - one-hot, averaged over the batch
                onehot = tf.one_hot(tf.cast(tf.gather(y, rows), tf.int32), sizes[-1])
                dz = ((tf.nn.softmax(h) - onehot) * tf.cast(lanes < count, tf.float32)[..., None]
                      / tf.cast(count, tf.float32))
            grads = [None] * len(params)
            for i in reversed(range(len(shapes))):
                grads[2 * i] = tf.reshape(tf.matmul(inputs[i], dz, transpose_a=True), (tf.shape(dz)[0], -1))
                grads[2 * i + 1] = tf.reduce_sum(dz, axis=1)
                if i > 0:  # inputs[i] is the previous layer's activation
                    w = tf.reshape(params[2 * i], (-1, *shapes[i]))
                    dz = tf.matmul(dz, w, transpose_b=True) * derivative(inputs[i])
            hyper_t = scheduled(hyper, t)
            updated = [opt.update(g, state, hyper_t) for g, state in zip(grads, states)]
            return t + 1, tuple(p + step_of(d, t) for p, (d, _) in zip(params, updated)), tuple(s for _, s in updated)

        def segment(r, t, params, states, losses, eff_lr, *scores):
            t, params, states = tf.while_loop(lambda t, *_: t < record_end[r], step, (t, params, states))
            value = scored(forward(x[None], params)[0], y)
            rates = tf.concat([tf.broadcast_to(effective_lr(s, t - 1), tf.shape(p)) for s, p in zip(states, params)], 1)
            if held:  # the held-out rows' loss and accuracy, (K, 2)
                h = forward(held[0][None], params)[0]
                right = tf.cast(tf.equal(tf.argmax(h, axis=2, output_type=tf.int32), tf.cast(held[1], tf.int32)),
                                tf.float64)
                scores = (scores[0].write(r, tf.stack([scored(h, held[1]), tf.reduce_mean(right, axis=1)], axis=1)),)
            return (r + 1, t, params, states, losses.write(r, value), eff_lr.write(r, rates), *scores)

        records = (tf.TensorArray(tf.float64, size=n_records), tf.TensorArray(tf.float32, size=n_records),
                   *([tf.TensorArray(tf.float64, size=n_records)] if held else []))
        states = tuple(opt.init(p) for p in params)
        _, _, params, _, losses, eff_lr, *scores = tf.while_loop(
            lambda r, *_: r < n_records, segment, (tf.constant(0), tf.constant(0), params, states, *records))
        return (tf.concat(params, axis=1), losses.stack(), eff_lr.stack(), *(a.stack() for a in scores))

    options = dict(jit_compile=True, reduce_retracing=True, autograph=False)
    if held_out:
        return tf.function(lambda x, y, xh, yh, *rest: train(x, y, (xh, yh), *rest), **options)
    return tf.function(lambda x, y, *rest: train(x, y, (), *rest), **options)
