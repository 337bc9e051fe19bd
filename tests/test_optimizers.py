"""From-scratch optimizers against the book's formulas (an independent float64 NumPy version),
Keras, the book's airfoil settings and the book's 2-D demo."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from pipeline.core import engine, optimizers, pieces, problems, quadratic, reference
from conftest import PARAMS

ALL = sorted(optimizers.OPTIMIZERS)
WITH_KERAS = [name for name in ALL if optimizers.get(name).keras is not None]
# Keras's Adam adds eps to sqrt(s) / sqrt(1 - beta2^t) where the book adds it to sqrt(s_hat): its
# eps is larger by 1 / sqrt(1 - beta2^t) (31.6 at t = 1, 1.04 at t = 300 for beta2 = 0.999). The
# relative step difference is at most eps * (1 / sqrt(1 - beta2^t) - 1) / (sqrt(s_hat) + eps), about
# 1e-4 in the first steps on the airfoil's gradients and shrinking after: the loss curves agree to
# 3e-5 relative, and the distance travelled to 2e-5 (checked below, with margin).
RTOL = {"adam": {"loss": 1e-4, "step": 1e-3, "atol": 3e-5}}


def numpy_step(name: str, x, g, state: dict, h: dict, t: int):
    """The book's update of each optimizer (D2L 11.6-11.10, MXNet/PyTorch versions), float64.
    Returns (new x, effective lr)."""
    if name == "sgd":
        return x - h["lr"] * g, np.full_like(x, h["lr"])
    if name == "momentum":
        state["v"] = h["beta"] * state.get("v", 0) + g
        return x - h["lr"] * state["v"], np.full_like(x, h["lr"])
    if name == "adagrad":
        state["s"] = state.get("s", 0) + g ** 2
        eff = h["lr"] / np.sqrt(state["s"] + 1e-6)
        return x - eff * g, eff
    if name == "rmsprop":
        state["s"] = h["gamma"] * state.get("s", 0) + (1 - h["gamma"]) * g ** 2
        eff = h["lr"] / np.sqrt(state["s"] + 1e-6)
        return x - eff * g, eff
    if name == "adadelta":
        rho, eps = h["rho"], 1e-5
        state["s"] = rho * state.get("s", 0) + (1 - rho) * g ** 2
        step = np.sqrt(state.get("dx", 0) + eps) / np.sqrt(state["s"] + eps) * g
        state["dx"] = rho * state.get("dx", 0) + (1 - rho) * step ** 2
        return x - step, np.sqrt(state["dx"] + eps) / np.sqrt(state["s"] + eps)
    b1, b2 = h["beta1"], h["beta2"]
    state["v"] = b1 * state.get("v", 0) + (1 - b1) * g
    if name == "adam":
        state["s"] = b2 * state.get("s", 0) + (1 - b2) * g ** 2
        eps = 1e-6
    else:  # yogi
        s = state.get("s", 0)
        state["s"] = s + (1 - b2) * np.sign(g ** 2 - s) * g ** 2
        eps = 1e-3
    v_hat, s_hat = state["v"] / (1 - b1 ** t), state["s"] / (1 - b2 ** t)
    eff = h["lr"] / (np.sqrt(s_hat) + eps)
    return x - eff * v_hat, eff


@pytest.mark.parametrize("name", ALL)
def test_engine_follows_the_book_formula_step_by_step_on_the_airfoil_data(name, dataset, params):
    """20 steps of batch 10 on the real data, loss and effective lr recorded after every step,
    against the float64 NumPy formulas on the same batches: equal to float32 precision."""
    protocol = dataclasses.replace(params.train, epochs=1, record_every=10)
    small = dataset._replace(features=dataset.features[:200], target=dataset.target[:200])
    hyper = PARAMS.book[name]
    ours = engine.train(small, name, hyper, [3], protocol, "linreg")
    theta0, batches = problems.get("linreg").stream(3, 200, 5, protocol)
    X = np.concatenate([small.features, np.ones((200, 1))], axis=1).astype(np.float64)
    y = small.target.astype(np.float64)
    theta, state, losses, effs = theta0.astype(np.float64), {}, [], []
    for t, rows in enumerate(batches[0], start=1):
        g = X[rows].T @ (X[rows] @ theta - y[rows]) / len(rows)
        theta, eff = numpy_step(name, theta, g, state, hyper, t)
        losses.append(np.mean((X @ theta - y) ** 2) / 2)
        effs.append(eff)
    np.testing.assert_allclose(ours.losses[0], losses, rtol=1e-5)
    np.testing.assert_allclose(ours.effective_lr[0], np.array(effs), rtol=1e-4)
    np.testing.assert_allclose(ours.params[0], theta, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", WITH_KERAS)
def test_engine_follows_keras_trajectory(name, dataset, params):
    """Same seed stream, same batches: the engine and Keras's built-in (through the book's loop,
    compiled as the evaluation runs it) agree at every record."""
    hyper = PARAMS.book[name]
    ours = engine.train(dataset, name, hyper, [3], params.train, "linreg")
    keras = reference.train_eager(dataset, "linreg", name, hyper, 3, params.train, use_keras=True, book_loop=False)
    np.testing.assert_array_equal(ours.examples, keras.examples)
    np.testing.assert_allclose(ours.losses, keras.losses, rtol=RTOL.get(name, {}).get("loss", 2e-6))
    np.testing.assert_allclose(ours.params, keras.params, rtol=RTOL.get(name, {}).get("step", 1e-5),
                               atol=RTOL.get(name, {}).get("atol", 1e-6))


@pytest.mark.parametrize("name", WITH_KERAS)
def test_update_matches_keras_step_by_step(name):
    """One pure update against one Keras step, on random gradients, for 50 steps."""
    opt = optimizers.get(name)
    rng = np.random.default_rng(0)
    theta = tf.Variable(rng.normal(size=(1, 6)).astype(np.float32))
    ours = tf.constant(theta.numpy())
    state = opt.init(ours)
    hyper = {k: tf.constant([[v]], tf.float32) for k, v in PARAMS.book[name].items()}
    keras = reference.keras_optimizer(name, PARAMS.book[name])
    start = theta.numpy()
    for _ in range(50):
        g = tf.constant(rng.normal(size=(1, 6)).astype(np.float32))
        delta, state = opt.update(g, state, hyper)
        ours = ours + delta
        keras.apply_gradients([(g, theta)])
        # compare the distance travelled, which is what each formula defines
        np.testing.assert_allclose(ours.numpy() - start, theta.numpy() - start,
                                   rtol=RTOL.get(name, {}).get("step", 1e-5), atol=RTOL.get(name, {}).get("atol", 1e-6))


def test_effective_lr_is_read_from_state():
    g = tf.constant([[2.0, 0.5]])
    hyper = {"lr": tf.constant([[0.1]]), "gamma": tf.constant([[0.9]])}
    rms = optimizers.get("rmsprop")
    _, state = rms.update(g, rms.init(g), hyper)
    np.testing.assert_allclose(rms.effective_lr(state, hyper).numpy(),
                               0.1 / np.sqrt(0.1 * np.array([[4.0, 0.25]]) + 1e-6), rtol=1e-6)
    assert isinstance(state[0], pieces.SquaresState) and state[0]._fields == ("s",)  # named, like optax's
    adam_state = optimizers.get("adam").init(g)[0]
    assert isinstance(adam_state, pieces.AdamState) and adam_state._fields == ("t", "v", "s")
    ada = optimizers.get("adagrad")
    _, state = ada.update(g, ada.update(tf.ones_like(g), ada.init(g), hyper)[1], hyper)
    np.testing.assert_allclose(ada.effective_lr(state, hyper).numpy(),
                               0.1 / np.sqrt(np.array([[5.0, 1.25]]) + 1e-6), rtol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_book_settings_on_the_airfoil_data_end_near_the_books_numbers(name, dataset, params):
    result = engine.train(dataset, name, PARAMS.book[name], [0, 1, 2], params.train, "linreg")
    assert ((result.final_loss > 0.240) & (result.final_loss < 0.255)).all(), result.final_loss


@pytest.mark.parametrize("name", ALL)
def test_batched_call_equals_single_calls_for_every_optimizer(name, dataset, params):
    hyper = {h: np.array([v * f for f in (0.5, 1.0, 1.0)]) if h == "lr" else np.array([v, v, v ** 2])
             for h, v in PARAMS.book[name].items()}
    seeds = np.array([0, 4, 4])
    batched = engine.train(dataset, name, hyper, seeds, params.train, "linreg")
    for i in range(3):
        single = engine.train(dataset, name, {h: v[i] for h, v in hyper.items()}, [seeds[i]], params.train, "linreg")
        np.testing.assert_array_equal(batched.losses[i], single.losses[0])
        np.testing.assert_array_equal(batched.effective_lr[i], single.effective_lr[0])


def test_effective_lr_shapes_the_book_story(dataset, params):
    """Adagrad's rate only decays; RMSProp's stops decaying; SGD's is constant; Adam's bias
    correction keeps its first rates from being tiny; Adadelta's scale grows from sqrt(eps)."""
    def eff(name, **hyper):
        return engine.train(dataset, name, {**PARAMS.book[name], **hyper}, [0], params.train, "linreg").effective_lr[0]
    adagrad = eff("adagrad")
    assert (np.diff(adagrad, axis=0) <= 0).all()
    assert (adagrad[-1] < 0.5 * adagrad[0]).all()
    rms = eff("rmsprop")
    second_half = rms[len(rms) // 2:]
    assert not (np.diff(second_half, axis=0) <= 0).all()  # it goes up as well as down
    assert rms[-1].min() > 0.2 * rms[len(rms) // 2].min()
    assert (eff("sgd") == np.float32(0.05)).all()
    # Without the bias correction, s after 20 steps of beta2 = 0.999 would be 2% of g^2: a rate
    # five to seven times larger. With it, Adam's first rate is of the order of lr / |g|.
    adam = eff("adam")
    assert (adam[0] < 0.1).all() and (adam[0] > 0.001).all()
    adadelta = eff("adadelta")
    assert (adadelta[-1] > adadelta[0]).any()  # no learning rate: its scale is learned from its own steps


def test_quadratic_prints_the_books_line():
    path = quadratic.trace("rmsprop", {"lr": 0.4, "gamma": 0.9}, steps=20)
    assert quadratic.book_line(path) == "epoch 20, x1: -0.010599, x2: 0.000000"
    assert path.shape == (21, 2) and tuple(path[0]) == quadratic.START
    # The book's Adagrad run (section 11.7) with eta 0.4:
    assert quadratic.book_line(quadratic.trace("adagrad", {"lr": 0.4})) == "epoch 20, x1: -2.382563, x2: -0.158591"


@pytest.mark.parametrize("name", ALL)
def test_quadratic_demo_follows_the_numpy_formula(name):
    """The 2-D demo of every optimizer (float64) against the NumPy formulas."""
    hyper = PARAMS.evaluate.quadratic[name]
    path = quadratic.trace(name, hyper, steps=20)
    x, state = np.array(quadratic.START), {}
    for t in range(1, 21):
        x, _ = numpy_step(name, x, x * np.array([0.2, 4.0]), state, hyper, t)
    np.testing.assert_allclose(path[-1], x, rtol=1e-9, atol=1e-12)
