"""The one training engine: the book's `train_ch11` for K configurations of a registered problem at once.

The protocol is the book's: minibatches of `batch_size` rows reshuffled every epoch, and the loss
mean((y_hat - y)^2 / 2) over all training rows recorded every `record_every` examples, together with
the effective learning rate. K configurations (a vector of hyperparameters and seeds) train side by
side in XLA-compiled loops; rows never mix, so one batched call equals K single calls. The problem
is a workload (problems.py): the engine asks it for the loop (linear.py, network.py), its data, its
start and its effective-lr columns, and never branches on its kind.

Randomness comes only from each configuration's seed: the seed fixes the initial weights (the
workload's) and every epoch's permutation (randomness.py). Configurations that share a seed see the same batches
(common random numbers), which makes comparisons between hyperparameters fairer.
"""
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from pipeline.core import optimizers, problems, schedules
from pipeline.core.config import TrainParams
from pipeline.core.data import Dataset
from pipeline.core.tfimport import tf


class TrainResult(NamedTuple):
    examples: np.ndarray  # (R,) examples seen at each record
    losses: np.ndarray  # (K, R) training loss over all rows at each record (float64)
    effective_lr: np.ndarray  # (K, R, C): the columns the workload's lr_columns names (per coordinate, or per-layer quantiles)
    params: np.ndarray  # (K, P) final parameters (w..., b)
    diverged: np.ndarray  # (K,) True where the run hit inf/NaN or blew up (see TrainParams.diverge_factor)
    initial_loss: np.ndarray  # (K,) the loss at the start of training: what a diverged run scores
    held_out: np.ndarray = None  # (K, R, M) the workload's held_out_names at each record; M = 0 without a split

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
                             diverged=self.diverged[rows], initial_loss=self.initial_loss[rows],
                             held_out=None if self.held_out is None else self.held_out[rows])

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
    steps_per_epoch = n_rows // b if protocol.drop_remainder else math.ceil(n_rows / b)
    rows = np.full(steps_per_epoch, b)
    rows[-1] = b if protocol.drop_remainder else n_rows - b * (steps_per_epoch - 1)
    step_rows = np.tile(rows, protocol.epochs)
    seen = np.cumsum(step_rows)
    recorded = seen % protocol.record_every == 0  # the book: `if n % 200 == 0`
    recorded[-1] = True  # always record the end, even when record_every does not divide it
    return Timeline(steps_per_epoch, step_rows, (np.flatnonzero(recorded) + 1).astype(np.int32), seen[recorded])


# Each new (K chunk, seeds bucket) shape traces once by design; TensorFlow's retracing warning
# would only be noise in the stage logs.
tf.get_logger().setLevel("ERROR")


# A network's loop runs on one core whatever K is (a second intra-op thread only spins), so its
# rows train in one chunk per core, concurrently: at evaluate's 64 rows 2.1x faster per row.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)  # not on macOS
_POOL = ThreadPoolExecutor(max(1, _CORES - 1), thread_name_prefix="engine")
_RUN_SHAPES = set()  # (compiled loop, rows per call, input shapes) already run once: compiled


def _bucket(k: int) -> int:
    """Pad seed counts to powers of two so XLA compiles a handful of shapes, not one per K."""
    return 1 << max(0, (k - 1).bit_length())


def train(
    dataset: Dataset,
    optimizer: str,
    hyper: dict,
    seeds,
    protocol: TrainParams,
    problem: str,
    schedule="constant",
) -> TrainResult:
    """Train K configurations of a registered problem's model: hyper maps each of the optimizer's
    hyperparameters, and each study setting of the schedule (schedules.RUN_SETTINGS), to K values
    (or one value for all), seeds gives K seeds (or one), schedule one name or K. `protocol` is
    the problem's (config.protocol)."""
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
    workload = problems.get(problem)
    streams = [workload.stream(int(s), n_rows, n_features, protocol) for s in unique_seeds]
    theta0 = np.stack([s[0] for s in streams])
    batches = np.stack([s[1].reshape(-1, protocol.batch_size) for s in streams], axis=1)  # (T, S, B)

    # Pad S to a power of two by repeating the first seed: padded seeds are never gathered.
    sb = _bucket(len(unique_seeds))
    theta0 = np.concatenate([theta0, np.repeat(theta0[:1], sb - len(theta0), axis=0)])
    batches = np.concatenate([batches, np.repeat(batches[:, :1], sb - batches.shape[1], axis=1)], axis=1)
    shared = (tf.constant(batches), tf.constant(sched.step_rows.astype(np.int32)), tf.constant(sched.record_end),
              len(sched.examples))
    run, data = workload.loop(optimizer, n_features), workload.loop_data(dataset)
    start = workload.starting_loss(dataset, unique_seeds, protocol)[seed_index]
    size = workload.rows_per_call(k, _CORES)

    def call(first: int):
        """Rows first.. first + size, a short chunk padded with its own rows (they train and are dropped)."""
        pad = lambda a: np.resize(a[first:first + size], size)  # noqa: E731
        theta, losses, eff_lr, *held = run(*data, *shared, tf.constant(pad(seed_index.astype(np.int32))),
                                           tf.constant(theta0), {name: tf.constant(pad(v)[:, None]) for name, v in values.items()},
                                           tf.constant(lr_factor), tf.constant(pad(schedule_index)))
        kept = k - first
        eff_lr = workload.columns(eff_lr.numpy()[:, :kept], n_features)  # (records, rows, columns)
        # A workload with held-out data scores it in the loop at every record: (records, rows, metrics).
        held = held[0].numpy()[:, :kept] if held else np.zeros((len(sched.examples), kept, 0))
        return theta.numpy()[:kept], losses.numpy().T[:kept], eff_lr.transpose(1, 0, 2), held.transpose(1, 0, 2)

    starts, shape = list(range(0, k, size)), (run, size, batches.shape, lr_factor.shape, *(d.shape for d in data))
    # A new shape compiles in its first call: alone, not in every thread at once (each paid it in full).
    outs = [] if shape in _RUN_SHAPES else [call(starts.pop(0))]
    _RUN_SHAPES.add(shape)
    others = [_POOL.submit(call, start) for start in starts[1:]]
    outs += [call(start) for start in starts[:1]] + [f.result() for f in others]
    theta, losses, eff_lr, held = (np.concatenate(part) for part in zip(*outs))
    with np.errstate(invalid="ignore"):
        blew_up = (losses > protocol.diverge_factor * start[:, None]).any(axis=1)
    diverged = ~(np.isfinite(losses).all(axis=1) & np.isfinite(theta).all(axis=1)) | blew_up
    return TrainResult(sched.examples, losses, eff_lr, theta, diverged, start, held)


def train_groups(dataset: Dataset, optimizer: str, groups: list, protocol: TrainParams, problem: str) -> list:
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


def train_optimizers(dataset: Dataset, groups_of: dict, protocol: TrainParams, problem: str) -> dict:
    """train_groups for several optimizers: optimizer -> its groups, to optimizer -> its results.
    A network's optimizers train side by side: each first compiles its own loop, 2.5 s on one
    core, which then overlaps another's run."""
    one = lambda name: train_groups(dataset, name, groups_of[name], protocol, problem)  # noqa: E731
    if not problems.get(problem).concurrent:
        return {name: one(name) for name in groups_of}
    return side_by_side(one, list(groups_of))


def side_by_side(work, names: list) -> dict:
    """name -> work(name): the first in this thread, the rest in turn on a thread per spare core.
    An error beside the first reaches the caller once the first is done; on an error or a Ctrl-C,
    what has not started never does and nothing waits for the rest (a stage exits without teardown)."""
    if len(names) < 2 or _CORES < 2:
        return {name: work(name) for name in names}
    # Not _POOL: its thread runs the chunks these calls hand it, and must never wait on itself.
    beside = ThreadPoolExecutor(_CORES - 1, thread_name_prefix="engine-side-by-side")
    try:
        others = {name: beside.submit(work, name) for name in names[1:]}
        first = work(names[0])
        return {names[0]: first, **{name: f.result() for name, f in others.items()}}
    finally:
        beside.shutdown(wait=False, cancel_futures=True)


def initial_loss(dataset: Dataset, seeds, protocol: TrainParams, problem: str) -> np.ndarray:
    """(K,) the training loss at the start of training for each seed: what a diverged run scores."""
    return problems.get(problem).starting_loss(dataset, seeds, protocol)
