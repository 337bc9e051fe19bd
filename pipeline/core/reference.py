"""The book's eager `train_ch11` / `train_concise_ch11`: a Python loop over a tf.data pipeline with
GradientTape, one configuration at a time.

Our results come from the engine; this loop is what the engine is checked against (same seed
stream, so the same initial weights and batches), the baseline the benchmarks measure, and how
Keras's built-in optimizers are run for the report's from-scratch vs Keras comparison.
"""
import numpy as np

from pipeline.core import optimizers, problems
from pipeline.core.config import TrainParams
from pipeline.core.data import Dataset
from pipeline.core.engine import TrainResult
from pipeline.core.tfimport import tf


def load_keras() -> None:
    """Load Keras now rather than on first use (tfimport.py): with it come pandas and Arrow's native
    libraries, and a caller about to run TensorFlow in several threads loads them before it starts."""
    tf.keras.optimizers.SGD


def keras_optimizer(name: str, hyper: dict):
    """The Keras built-in configured to the book's formula (the registry says how)."""
    make = optimizers.get(name).keras
    if make is None:
        raise ValueError(f"no Keras counterpart for {name!r}")
    return make(hyper)


def train_eager(dataset: Dataset, problem: str, optimizer: str, hyper: dict, seed: int, protocol: TrainParams,
                use_keras: bool = False, book_loop: bool = True) -> TrainResult:
    """book_loop: the book's loop as written, every op eager and the loss summed batch by batch
    through tf.data (what the benchmark times). False, for the evaluation's Keras runs, compiles
    the update step with tf.function and computes the loss in one call: the same updates at about
    a twentieth of the cost, and a loss that differs only in summation order."""
    n_rows, n_features = dataset.features.shape
    workload = problems.get(problem)
    if workload.kind != "linear":
        raise ValueError(f"the book's loop trains the linear model, not {problem}")
    theta0, batches = workload.stream(int(seed), n_rows, n_features, protocol)
    w = tf.Variable(theta0[:-1, None])
    b = tf.Variable(theta0[-1:])
    net = lambda x: tf.matmul(x, w) + b
    squared_loss = lambda y_hat, y: (y_hat - tf.reshape(y, y_hat.shape)) ** 2 / 2
    start = float(tf.reduce_mean(squared_loss(net(dataset.features), dataset.target)))

    if use_keras:
        keras_opt = keras_optimizer(optimizer, hyper)
        keras_opt.build([w, b])  # its slots exist before any tf.function traces the step
        apply = lambda grads: keras_opt.apply_gradients(zip(grads, [w, b]))
    else:
        opt = optimizers.get(optimizer)
        h = {name: tf.constant([[hyper[name]]], tf.float32) for name in opt.hyperparams}
        # State in variables, as Keras keeps it, so the step also runs under tf.function.
        state = [tf.nest.map_structure(tf.Variable, opt.init(tf.reshape(v, (1, -1)))) for v in (w, b)]

        def apply(grads):
            for v, g, slots in zip((w, b), grads, state):
                delta, new = opt.update(tf.reshape(g, (1, -1)), tf.nest.map_structure(tf.identity, slots), h)
                tf.nest.map_structure(lambda slot, value: slot.assign(value), slots, new)
                v.assign_add(tf.reshape(delta, v.shape))

    def evaluate_loss(data_iter):  # the book's: sum of per-example losses over all batches
        total, count = 0.0, 0
        for x, y in data_iter:
            l = squared_loss(net(x), y)
            total, count = total + float(tf.reduce_sum(l)), count + int(tf.size(l))
        return total / count

    def step(x, y):
        with tf.GradientTape() as tape:
            l = tf.reduce_mean(squared_loss(net(x), y))
        apply(tape.gradient(l, [w, b]))

    if not book_loop:
        step = tf.function(step)  # traced twice: full batches and the short last one
    examples, losses, seen = [], [], 0
    for epoch in range(protocol.epochs):
        order = batches[epoch].reshape(-1)[:n_rows]  # the engine's permutation for this epoch
        data_iter = tf.data.Dataset.from_tensor_slices(
            (dataset.features[order], dataset.target[order])
        ).batch(protocol.batch_size, drop_remainder=protocol.drop_remainder)
        for x, y in data_iter:
            step(x, y)
            seen += int(x.shape[0])
            if seen % protocol.record_every == 0:
                examples.append(seen)
                losses.append(evaluate_loss(data_iter) if book_loop else
                              float(tf.reduce_mean(squared_loss(net(dataset.features), dataset.target))))
    if not examples or examples[-1] != seen:  # the end, recorded as the engine always records it
        examples.append(seen)
        losses.append(evaluate_loss(data_iter) if book_loop else
                      float(tf.reduce_mean(squared_loss(net(dataset.features), dataset.target))))
    theta = np.concatenate([w.numpy()[:, 0], b.numpy()])[None]
    losses = np.array([losses])
    diverged = ~np.isfinite(losses).all(axis=1)
    return TrainResult(np.array(examples), losses, np.empty((1, len(examples), 0)), theta, diverged, np.array([start]),
                       np.empty((1, len(examples), 0)))  # the linear model holds no data out
