"""DeepOBS's quadratic_deep: a noisy 100-dimensional quadratic with a deep-learning-like spectrum.

The instance is DeepOBS's own (deepobs/tensorflow/testproblems/quadratic_deep.py, _quadratic.py,
datasets/quadratic.py), drawn here the way DeepOBS draws it:
  - 90 Hessian eigenvalues uniform in (0, 1) and 10 in (30, 60), then a Haar-random rotation R
    (Diaconis and Shahshahani's subgroup algorithm), all from one RandomState(42); H = R^T D R.
    DeepOBS keeps that generator at module level, so only the first instance built in a process
    was this one until their PR #44; here the generator is made anew for every build.
  - 1,000 training points x ~ N(0, 0.6^2 I) from RandomState(42), 1,000 test points from
    RandomState(43), as float32.
  - theta starts at ones; the per-example loss is 0.5 (theta - x)^T H (theta - x).
The loss is a quadratic form, so only H's symmetric part counts; the loop uses (H + H^T) / 2, the
exact gradient of that loss (DeepOBS's float product R^T D R is symmetric only to rounding).
Over a set of points the mean loss is 0.5 (theta - m)^T H (theta - m) + c, m the points' mean and
c = 0.5 mean (x - m)^T H (x - m): the minimum is c, at theta = m, in closed form.
"""
import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipeline.core import optimizers, schedules
from pipeline.core.workloads import Workload

DIM, POINTS, NOISE = 100, 1000, 0.6


def random_rotation(rng: np.random.RandomState, dim: int) -> np.ndarray:
    """A rotation in SO(dim) from the Haar measure by the subgroup algorithm, in DeepOBS's order of
    draws (written from its description and steps; the draws must match for the same instance)."""
    t = 2 * np.pi * rng.uniform()
    rotation = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    for d in range(2, dim):
        v = rng.normal(size=(d + 1, 1))
        v = v / np.sqrt(v.T @ v)  # a point on the unit sphere S^d
        e = np.concatenate([[[1.0]], np.zeros((d, 1))])
        x = (e - v) / np.sqrt((e - v).T @ (e - v))  # the reflection taking e to v
        embedded = np.block([[np.ones((1, 1)), np.zeros((1, d))], [np.zeros((d, 1)), rotation]])
        rotation = embedded - 2 * np.outer(x, x.T @ embedded)
    return -rotation  # DeepOBS negates, to fix the determinant


@functools.lru_cache(maxsize=1)
def instance() -> tuple:
    """(H float64 (D, D), training points float32 (N, D), test points float32 (N, D))."""
    rng = np.random.RandomState(42)
    eigenvalues = np.concatenate([rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)])
    rotation = random_rotation(rng, DIM)
    hessian = rotation.T @ (np.diag(eigenvalues) @ rotation)
    train = np.float32(np.random.RandomState(42).normal(0.0, NOISE, (POINTS, DIM)))
    test = np.float32(np.random.RandomState(43).normal(0.0, NOISE, (POINTS, DIM)))
    return hessian, train, test


def symmetric_hessian() -> np.ndarray:
    """(H + H^T) / 2 as float32, the matrix the loop and every loss use, and its float64 values."""
    h = instance()[0]
    return np.float32((h + h.T) / 2)


def mean_loss(theta: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(K,) mean over the points of 0.5 (theta - x)^T H (theta - x), in float64, directly."""
    h = symmetric_hessian().astype(np.float64)
    d = theta.astype(np.float64)[:, None, :] - points.astype(np.float64)[None]  # (K, N, D)
    return 0.5 * np.einsum("knd,de,kne->kn", d, h, d).mean(axis=1)


def offset(points: np.ndarray) -> tuple:
    """(m, c): the points' mean and the loss at theta = m, the minimum, in float64."""
    m = points.astype(np.float64).mean(axis=0)
    return m, float(mean_loss(m[None], points)[0])


@functools.lru_cache(maxsize=None)
def compiled(optimizer_name: str):
    from pipeline.core.tfimport import tf

    opt = optimizers.get(optimizer_name)

    @tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
    def run(x, hessian, hessian64, mean64, floor64, test_mean64, test_floor64, batches, step_rows, record_end,
            n_records, seed_index, theta0, hyper, lr_factor, schedule_index):
        # x (N, D) training points; hessian (D, D) float32, symmetric; mean64 (D,), floor64 () the closed
        # form's m and c on the training points, test_* on the test points; batches (T, S, B);
        # theta0 (S, D); hyper name -> (K, 1)
        theta = tf.gather(theta0, seed_index)
        scheduled, step_of, effective_lr = schedules.hooks(opt, hyper, lr_factor, schedule_index)
        lanes = tf.range(tf.shape(batches)[2])

        def step(t, theta, state):
            rows = tf.gather(batches[t], seed_index)  # (K, B)
            mask = tf.cast(lanes < step_rows[t], tf.float32)[None, :, None]
            batch_mean = tf.reduce_sum(tf.gather(x, rows) * mask, axis=1) / tf.cast(step_rows[t], tf.float32)
            # The mean per-example gradient H (theta - x) is H (theta - batch mean). Elementwise, not
            # matmul: one batched call must equal K single calls bit for bit.
            grads = tf.reduce_sum((theta - batch_mean)[:, None, :] * hessian[None], axis=2)
            delta, state = opt.update(grads, state, scheduled(hyper, t))
            return t + 1, theta + step_of(delta, t), state

        def loss_over(theta, mean, floor):  # 0.5 (theta - m)^T H (theta - m) + c, float64
            v = tf.cast(theta, tf.float64) - mean[None]
            return 0.5 * tf.reduce_sum(v[:, :, None] * hessian64[None] * v[:, None, :], axis=[1, 2]) + floor

        def segment(r, t, theta, state, losses, eff_lr, held):
            t, theta, state = tf.while_loop(lambda t, *_: t < record_end[r], step, (t, theta, state))
            lr_now = tf.broadcast_to(effective_lr(state, t - 1), tf.shape(theta))
            return (r + 1, t, theta, state, losses.write(r, loss_over(theta, mean64, floor64)), eff_lr.write(r, lr_now),
                    held.write(r, loss_over(theta, test_mean64, test_floor64)[:, None]))

        records = (tf.TensorArray(tf.float64, size=n_records), tf.TensorArray(tf.float32, size=n_records),
                   tf.TensorArray(tf.float64, size=n_records))
        _, _, theta, _, losses, eff_lr, held = tf.while_loop(
            lambda r, *_: r < n_records, segment, (tf.constant(0), tf.constant(0), theta, opt.init(theta), *records))
        return theta, losses.stack(), eff_lr.stack(), held.stack()

    return run


@dataclass(frozen=True)
class DeepQuadratic(Workload):
    """DeepOBS's quadratic_deep (py): its own 1,000 training and 1,000 test points,
    theta from ones whatever the seed, the loss's minimum in closed form."""

    kind: ClassVar[str] = "quadratic"
    uses_train_init: ClassVar[bool] = False
    concurrent: ClassVar[bool] = False
    activation_name: ClassVar[str] = "none"
    floor_words: ClassVar[str] = "closed-form"
    has_split: ClassVar[bool] = True
    held_out_names: ClassVar[tuple] = ("loss",)  # what TrainResult.held_out holds at each record

    def held_out_metrics(self, theta: np.ndarray) -> dict:
        """The mean loss over DeepOBS's 1,000 test points, float64 (all of them: DeepOBS's own
        evaluation drops the remainder of its batches of 128)."""
        return {"loss": mean_loss(theta, instance()[2])}

    def data(self, prepared):
        """Its own training points (the airfoil data plays no part): features x, no target."""
        from pipeline.core.data import Dataset

        _, train, _ = instance()
        return Dataset(train, np.zeros(len(train), np.float32), {"rows": len(train)})

    def closed_floor(self, dataset) -> float:
        return offset(dataset.features)[1]

    def data_record(self, dataset) -> dict:
        return {"source": "DeepOBS quadratic_deep: points x ~ N(0, 0.6^2 I) in 100 dimensions, float32",
                "train_points": "numpy.random.RandomState(42).normal(0.0, 0.6, (1000, 100))",
                "held_out_points": "numpy.random.RandomState(43).normal(0.0, 0.6, (1000, 100))",
                "train_rows": list(range(len(dataset.target))), "preprocessing": "none",
                "hessian_eigenvalues": np.linalg.eigvalsh(symmetric_hessian().astype(np.float64)).tolist()}

    def sizes(self, n_features: int) -> tuple:
        return (n_features,)

    def initial_params(self, seed: int, n_features: int, protocol) -> np.ndarray:
        return np.ones(n_features, np.float32)

    def initial_layers(self, theta0: np.ndarray, n_features: int) -> list:
        return [{"theta": theta0.tolist()}]

    def architecture(self, n_features: int) -> dict:
        return {"layers": [n_features], "activation": "none", "description": self.description}

    def init_label(self, train) -> str:
        return "ones"

    def lr_columns(self, n_features: int) -> tuple:
        """The 10%, 50% and 90% quantiles of the 100 coordinates' rates."""
        return ("theta p10", "theta median", "theta p90")

    def rate_layers(self, columns: tuple) -> dict:
        return {"theta": 1}

    def loop(self, optimizer: str, n_features: int):
        return compiled(optimizer)

    def loop_data(self, dataset) -> tuple:
        from pipeline.core.tfimport import tf

        hessian = symmetric_hessian()
        (mean, floor), (test_mean, test_floor) = offset(dataset.features), offset(instance()[2])
        return (tf.constant(dataset.features), tf.constant(hessian), tf.constant(hessian.astype(np.float64)),
                tf.constant(mean), tf.constant(floor, tf.float64), tf.constant(test_mean), tf.constant(test_floor, tf.float64))

    def starting_loss(self, dataset, seeds, protocol) -> np.ndarray:
        start = mean_loss(np.ones((1, dataset.features.shape[1])), dataset.features)
        return np.repeat(start, len(seeds))

    def rows_per_call(self, k: int, cores: int) -> int:
        return 1 << max(0, (k - 1).bit_length())

    def columns(self, rates: np.ndarray, n_features: int) -> np.ndarray:
        from pipeline.core import network

        return network.bands(rates, [(0, n_features)])
