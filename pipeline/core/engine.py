"""The one training engine: the book's `train_ch11` for K configurations at once.

Model and protocol are the book's: linear regression y_hat = X w + b, w ~ N(0, init_std), b = 0,
minibatches of `batch_size` rows reshuffled every epoch, and the loss mean((y_hat - y)^2 / 2) over
all training rows recorded every `record_every` examples, together with every coordinate's
effective learning rate. K configurations (a vector of hyperparameters and seeds) train side by side
in one XLA-compiled loop; rows never mix, so one batched call equals K single calls.

Randomness comes only from each configuration's seed, through TensorFlow's stateless RNG: the
seed fixes the initial weights and every epoch's permutation. Configurations that share a seed see
the same batches (common random numbers), which makes comparisons between hyperparameters fairer.
"""
import functools
import math
from typing import NamedTuple

import numpy as np

from pipeline.core import network, optimizers, problems, schedules
from pipeline.core.config import TrainParams
from pipeline.core.data import Dataset
from pipeline.core.tfimport import tf


class TrainResult(NamedTuple):
    examples: np.ndarray  # (R,) examples seen at each record
    losses: np.ndarray  # (K, R) training loss over all rows at each record (float64)
    effective_lr: np.ndarray  # (K, R, C): the columns problems.lr_columns names (per coordinate, or per-layer quantiles)
    params: np.ndarray  # (K, P) final parameters (w..., b)
    diverged: np.ndarray  # (K,) True where the run hit inf/NaN or blew up (see TrainParams.diverge_factor)
    initial_loss: np.ndarray  # (K,) the loss at the start of training: what a diverged run scores

    def scored(self, objective: str = "final_loss") -> np.ndarray:
        """(K,) the objective under the one divergence rule: a diverged run scores its initial loss."""
        return np.where(self.diverged, self.initial_loss, self.score(objective))

    @property
    def final_loss(self) -> np.ndarray:
        """(K,) last recorded loss, NaN where the run diverged."""
        return np.where(self.diverged, np.nan, self.losses[:, -1])

    def take(self, rows: slice) -> "TrainResult":
        """The runs in `rows`, as if trained on their own (rows never mix)."""
        return self._replace(losses=self.losses[rows], effective_lr=self.effective_lr[rows], params=self.params[rows],
                             diverged=self.diverged[rows], initial_loss=self.initial_loss[rows])

    def score(self, objective: str) -> np.ndarray:
        """(K,) a study objective per run: "final_loss", or "mean_loss" over the whole curve
        (which also rewards getting there fast). NaN where the run diverged."""
        if objective == "mean_loss":
            return np.where(self.diverged, np.nan, self.losses.mean(axis=1))
        return self.final_loss


class Timeline(NamedTuple):
    """Static shape of one training run, derived from the data size and the protocol."""

    steps_per_epoch: int
    step_rows: np.ndarray  # (T,) rows in each step's batch (the last of an epoch may be short)
    record_end: np.ndarray  # (R,) record r is taken after steps [0, record_end[r]); the last is T
    examples: np.ndarray  # (R,) examples seen at each record


def timeline(n_rows: int, protocol: TrainParams) -> Timeline:
    b = protocol.batch_size
    steps_per_epoch = math.ceil(n_rows / b)
    rows = np.full(steps_per_epoch, b)
    rows[-1] = n_rows - b * (steps_per_epoch - 1)
    step_rows = np.tile(rows, protocol.epochs)
    seen = np.cumsum(step_rows)
    recorded = seen % protocol.record_every == 0  # the book: `if n % 200 == 0`
    recorded[-1] = True  # always record the end, even when record_every does not divide it
    return Timeline(steps_per_epoch, step_rows, (np.flatnonzero(recorded) + 1).astype(np.int32), seen[recorded])


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


# Each new (K bucket, seeds bucket) shape traces once by design; TensorFlow's retracing warning
# would only be noise in the stage logs.
tf.get_logger().setLevel("ERROR")


def _bucket(k: int) -> int:
    """Pad batch sizes to powers of two so XLA compiles a handful of shapes, not one per K."""
    return 1 << max(0, (k - 1).bit_length())


@functools.lru_cache(maxsize=None)
def _compiled(optimizer_name: str):
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


def train(
    dataset: Dataset,
    optimizer: str,
    hyper: dict,
    seeds,
    protocol: TrainParams,
    problem: str = "linreg",
    schedule="constant",
) -> TrainResult:
    """Train K configurations of a registered problem's model: hyper maps each of the optimizer's
    hyperparameters, and each study setting of the schedule (schedules.RUN_SETTINGS), to K values
    (or one value for all), seeds gives K seeds (or one), schedule one name or K. `protocol` is
    the problem's (problems.protocol)."""
    opt = optimizers.get(optimizer)
    names = np.broadcast_to(np.asarray(schedule, dtype=object), np.shape(schedule))
    wanted = set(opt.hyperparams) | {s for n in set(names.flat) for s in schedules.get(n).run_settings}
    missing = wanted - set(hyper)
    if missing:
        raise ValueError(f"{optimizer} needs hyperparameters {sorted(missing)}")
    seeds = np.atleast_1d(np.asarray(seeds, dtype=np.int64))
    values = {name: np.atleast_1d(np.asarray(hyper[name], dtype=np.float32)) for name in opt.hyperparams}
    settings = {name: np.atleast_1d(np.asarray(hyper[name], dtype=np.float64)) for name in wanted - set(opt.hyperparams)}
    k = max([len(seeds), names.size] + [len(v) for v in (*values.values(), *settings.values())])
    seeds = np.broadcast_to(seeds, (k,))
    values = {name: np.broadcast_to(v, (k,)) for name, v in values.items()}

    n_rows, n_features = dataset.features.shape
    sched = timeline(n_rows, protocol)
    lr_factor, schedule_index = schedules.factor_table(
        np.broadcast_to(names, (k,)), {name: np.broadcast_to(v, (k,)) for name, v in settings.items()},
        len(sched.step_rows))
    unique_seeds, seed_index = np.unique(seeds, return_inverse=True)
    model = problems.get(problem)
    sizes = problems.layer_sizes(problem, n_features)
    if model.hidden:
        streams = [network_stream(int(s), n_rows, sizes, protocol) for s in unique_seeds]
    else:
        streams = [seed_stream(int(s), n_rows, n_features, protocol) for s in unique_seeds]
    theta0 = np.stack([s[0] for s in streams])
    batches = np.stack([s[1].reshape(-1, protocol.batch_size) for s in streams], axis=1)  # (T, S, B)

    # Pad S, and the linear model's K, to powers of two by repeating the first entry: padded rows
    # train and are dropped. A network's K is padded only to 2: its step costs too much to train
    # spare rows, and its compile is paid once per study anyway.
    kb, sb = (max(k, 2) if model.hidden else _bucket(k)), _bucket(len(unique_seeds))  # network.py: why 2
    pad_k = lambda a: np.concatenate([a, np.repeat(a[:1], kb - k, axis=0)])
    theta0 = np.concatenate([theta0, np.repeat(theta0[:1], sb - len(theta0), axis=0)])
    batches = np.concatenate([batches, np.repeat(batches[:, :1], sb - batches.shape[1], axis=1)], axis=1)
    loop = (tf.constant(batches), tf.constant(sched.step_rows.astype(np.int32)), tf.constant(sched.record_end),
            len(sched.examples), tf.constant(pad_k(seed_index.astype(np.int32))), tf.constant(theta0),
            {name: tf.constant(pad_k(v)[:, None]) for name, v in values.items()}, tf.constant(lr_factor),
            tf.constant(pad_k(schedule_index)))

    if model.hidden:
        theta, losses, eff_lr = network.compiled(optimizer, sizes, model.activation)(
            tf.constant(dataset.features), tf.constant(dataset.target), *loop)
        start = network.starting_loss(dataset.features, dataset.target, unique_seeds, sizes, model.activation)[seed_index]
    else:
        xs = np.concatenate([dataset.features, np.ones((n_rows, 1), np.float32)], axis=1)
        gram = gram_matrix(dataset)
        theta, losses, eff_lr = _compiled(optimizer)(
            tf.constant(xs), tf.constant(dataset.target), tf.constant(gram), *loop)
        start = _loss(gram, theta0[seed_index])
    theta, losses, eff_lr = theta.numpy()[:k], losses.numpy().T[:k], eff_lr.numpy().transpose(1, 0, 2)[:k]
    with np.errstate(invalid="ignore"):
        blew_up = (losses > protocol.diverge_factor * start[:, None]).any(axis=1)
    diverged = ~(np.isfinite(losses).all(axis=1) & np.isfinite(theta).all(axis=1)) | blew_up
    return TrainResult(sched.examples, losses, eff_lr, theta, diverged, start)


def train_groups(dataset: Dataset, optimizer: str, groups: list, protocol: TrainParams,
                 problem: str = "linreg") -> list:
    """Several (hyper, seeds) groups in one call, one TrainResult each: the loop compiles once
    for them all instead of once per group shape."""
    sizes, hypers, seeds, names = [], [], [], []
    for hyper, group_seeds, *schedule in groups:  # (hyper, seeds) or (hyper, seeds, schedule name)
        group_seeds = np.atleast_1d(group_seeds)
        k = max([len(group_seeds)] + [np.size(v) for v in hyper.values()])
        sizes.append(k)
        hypers.append({h: np.broadcast_to(np.asarray(v, np.float64), (k,)) for h, v in hyper.items()})
        seeds.append(np.broadcast_to(group_seeds, (k,)))
        names += [schedule[0] if schedule else "constant"] * k
    # A setting only some groups' schedules read is NaN in the others' rows, which never read it.
    keys = dict.fromkeys(h for g in hypers for h in g)
    result = train(dataset, optimizer, {h: np.concatenate([g.get(h, np.full(len(s), np.nan)) for g, s in zip(hypers, seeds)])
                                        for h in keys}, np.concatenate(seeds), protocol, problem, names)
    ends = np.cumsum(sizes)
    return [result.take(slice(end - k, end)) for k, end in zip(sizes, ends)]


def initial_layers(dataset: Dataset, seed: int, protocol: TrainParams, problem: str) -> list:
    """A seed's initial parameters layer by layer, weights (fan_in x fan_out) then bias: what anyone
    needs to recompute a run (with the batches, engine.batch_order)."""
    n_rows, n_features = dataset.features.shape
    sizes = problems.layer_sizes(problem, n_features)
    theta0 = (network_stream(seed, n_rows, sizes, protocol) if problems.get(problem).hidden
              else seed_stream(seed, n_rows, n_features, protocol))[0]
    return [{"weights": theta0[w0:b0].reshape(sizes[i], sizes[i + 1]).tolist(), "bias": theta0[b0:end].tolist()}
            for i, (w0, b0, end) in enumerate(network.layer_slices(sizes))]


def initial_loss(dataset: Dataset, seeds, protocol: TrainParams, problem: str) -> np.ndarray:
    """(K,) the training loss at the start of training for each seed: what a diverged run scores."""
    n_rows, n_features = dataset.features.shape
    sizes, model = problems.layer_sizes(problem, n_features), problems.get(problem)
    if model.hidden:
        return network.starting_loss(dataset.features, dataset.target, seeds, sizes, model.activation)
    return _loss(gram_matrix(dataset), np.stack([seed_stream(int(s), n_rows, n_features, protocol)[0] for s in seeds]))


def gram_matrix(dataset: Dataset) -> np.ndarray:
    """[X, 1, y]^T [X, 1, y] / n in float64: the training loss of any (w, b) is 0.5 v^T G v."""
    n = len(dataset.target)
    z = np.concatenate(
        [dataset.features, np.ones((n, 1)), dataset.target[:, None]], axis=1, dtype=np.float64
    )
    return z.T @ z / n


def _loss(gram: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Training loss of each row of theta (K, P), from the Gram matrix."""
    v = np.concatenate([theta.astype(np.float64), -np.ones((len(theta), 1))], axis=1)
    return 0.5 * np.einsum("ki,ij,kj->k", v, gram, v)
