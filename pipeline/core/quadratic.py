"""The book's 2-D demo: an optimizer on f(x) = 0.1 x1^2 + 2 x2^2 from (-5, -2).

Uses the same optimizer registry as the engine, in float64 like the book's Python floats.
"""
import numpy as np

from pipeline.core import optimizers

START = (-5.0, -2.0)


def f(x: np.ndarray) -> np.ndarray:
    return 0.1 * x[..., 0] ** 2 + 2.0 * x[..., 1] ** 2


def trace(optimizer: str, hyper: dict, steps: int = 20) -> np.ndarray:
    """Positions (steps + 1, 2), starting point included."""
    from pipeline.core.tfimport import tf  # here, not at the top: the report stage draws f without paying for TensorFlow

    opt = optimizers.get(optimizer)
    h = {name: tf.constant([[float(hyper[name])]], tf.float64) for name in opt.hyperparams}
    x = tf.constant([START], tf.float64)
    state = opt.init(x)
    path = [x.numpy()[0]]
    for _ in range(steps):
        grads = x * tf.constant([[0.2, 4.0]], tf.float64)
        delta, state = opt.update(grads, state, h)
        x = x + delta
        path.append(x.numpy()[0])
    return np.array(path)


def book_line(path: np.ndarray) -> str:
    """The line d2l's train_2d prints after the last step."""
    x1, x2 = path[-1]
    return f"epoch {len(path) - 1}, x1: {x1:f}, x2: {x2:f}"
