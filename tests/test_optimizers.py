"""From-scratch optimizers against the book's formulas, Keras, and the book's 2-D demo."""
import numpy as np
import pytest
import tensorflow as tf

from pipeline import engine, optimizers, quadratic, reference

BOOK = {"sgd": {"lr": 0.05}, "momentum": {"lr": 0.005, "beta": 0.9},
        "adagrad": {"lr": 0.1}, "rmsprop": {"lr": 0.01, "gamma": 0.9}}


@pytest.mark.parametrize("name", sorted(BOOK))
def test_engine_follows_keras_trajectory(name, dataset, params):
    """Same seed stream, same batches: the engine and Keras's built-in (through the book's loop,
    compiled as the evaluation runs it) agree at every record."""
    ours = engine.train(dataset, name, BOOK[name], [3], params.train)
    keras = reference.train_eager(dataset, name, BOOK[name], 3, params.train, use_keras=True, book_loop=False)
    np.testing.assert_array_equal(ours.examples, keras.examples)
    np.testing.assert_allclose(ours.losses, keras.losses, rtol=2e-6)
    np.testing.assert_allclose(ours.params, keras.params, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(BOOK))
def test_update_matches_keras_step_by_step(name):
    """One pure update against one Keras step, on random gradients, for 50 steps."""
    opt = optimizers.get(name)
    rng = np.random.default_rng(0)
    theta = tf.Variable(rng.normal(size=(1, 6)).astype(np.float32))
    ours = tf.constant(theta.numpy())
    state = opt.init(ours)
    hyper = {k: tf.constant([[v]], tf.float32) for k, v in BOOK[name].items()}
    keras = reference.keras_optimizer(name, BOOK[name])
    for _ in range(50):
        g = tf.constant(rng.normal(size=(1, 6)).astype(np.float32))
        delta, state = opt.update(g, state, hyper)
        ours = ours + delta
        keras.apply_gradients([(g, theta)])
        np.testing.assert_allclose(ours.numpy(), theta.numpy(), rtol=1e-6, atol=1e-7)


def test_effective_lr_is_read_from_state():
    g = tf.constant([[2.0, 0.5]])
    hyper = {"lr": tf.constant([[0.1]]), "gamma": tf.constant([[0.9]])}
    _, (s,) = optimizers.get("rmsprop").update(g, optimizers.get("rmsprop").init(g), hyper)
    eff = optimizers.get("rmsprop").effective_lr((s,), hyper).numpy()
    np.testing.assert_allclose(eff, 0.1 / np.sqrt(0.1 * np.array([[4.0, 0.25]]) + 1e-6), rtol=1e-6)
    _, (s,) = optimizers.get("adagrad").update(g, (tf.ones_like(g),), hyper)
    np.testing.assert_allclose(optimizers.get("adagrad").effective_lr((s,), hyper).numpy(),
                               0.1 / np.sqrt(np.array([[5.0, 1.25]]) + 1e-6), rtol=1e-6)


def test_effective_lr_shapes_the_book_story(dataset, params):
    """Adagrad's rate only decays; RMSProp's stops decaying; SGD's is constant."""
    adagrad = engine.train(dataset, "adagrad", {"lr": 0.1}, [0], params.train).effective_lr[0]
    assert (np.diff(adagrad, axis=0) <= 0).all()
    assert (adagrad[-1] < 0.5 * adagrad[0]).all()
    rms = engine.train(dataset, "rmsprop", {"lr": 0.01, "gamma": 0.9}, [0], params.train).effective_lr[0]
    second_half = rms[len(rms) // 2:]
    assert not (np.diff(second_half, axis=0) <= 0).all()  # it goes up as well as down
    assert rms[-1].min() > 0.2 * rms[len(rms) // 2].min()
    sgd = engine.train(dataset, "sgd", {"lr": 0.05}, [0], params.train).effective_lr[0]
    assert (sgd == np.float32(0.05)).all()


def test_quadratic_prints_the_books_line():
    path = quadratic.trace("rmsprop", {"lr": 0.4, "gamma": 0.9}, steps=20)
    assert quadratic.book_line(path) == "epoch 20, x1: -0.010599, x2: 0.000000"
    assert path.shape == (21, 2) and tuple(path[0]) == quadratic.START
    # The book's Adagrad run (section 11.7) with eta 0.4:
    assert quadratic.book_line(quadratic.trace("adagrad", {"lr": 0.4})) == "epoch 20, x1: -2.382563, x2: -0.158591"
