"""The network problem: the engine's trajectories against an independent float64 NumPy computation
(forward and backward by hand), batched against single calls, and the protocol's premise."""
import dataclasses

import numpy as np
import pytest

from pipeline.core import config, engine, network, problems, randomness
from test_optimizers import ALL, numpy_step
from conftest import PARAMS

SIZES = (5, 64, 64, 1)


def forward(theta, x):
    """The 5-64-64-1 tanh network in float64, written without the pipeline: hidden outputs and y_hat."""
    W1, b1 = theta[:320].reshape(5, 64), theta[320:384]
    W2, b2 = theta[384:4480].reshape(64, 64), theta[4480:4544]
    W3, b3 = theta[4544:4608].reshape(64, 1), theta[4608:]
    a1 = np.tanh(x @ W1 + b1)
    a2 = np.tanh(a1 @ W2 + b2)
    return a1, a2, (a2 @ W3 + b3)[:, 0]


def numpy_network(theta, X, y, rows):
    """Loss gradient of the network on `rows`, float64, written without the engine."""
    W2, W3 = theta[384:4480].reshape(64, 64), theta[4544:4608].reshape(64, 1)
    x = X[rows]
    a1, a2, y_hat = forward(theta, x)
    d = y_hat - y[rows]
    d3 = d[:, None] / len(rows)
    d2 = (d3 @ W3.T) * (1 - a2 ** 2)
    d1 = (d2 @ W2.T) * (1 - a1 ** 2)
    return np.concatenate([(x.T @ d1).ravel(), d1.sum(0), (a1.T @ d2).ravel(), d2.sum(0), (a2.T @ d3).ravel(),
                           d3.sum(0)])


def numpy_loss(theta, X, y):
    return np.mean((forward(theta, X)[2] - y) ** 2) / 2


@pytest.mark.parametrize("batch", [200, 10], ids=["full batch", "minibatch"])
@pytest.mark.parametrize("name", ALL)
def test_network_follows_float64_numpy_for_100_steps(name, batch, dataset, params):
    """100 steps on 200 real rows, the loss over all of them after every step: equal to 1e-5 relative,
    and each layer's effective-lr quantiles equal to np.quantile's over the float64 rates."""
    rows = 200
    protocol = dataclasses.replace(params.train, batch_size=batch, epochs=100 * batch // rows, record_every=batch)
    small = dataset._replace(features=dataset.features[:rows], target=dataset.target[:rows])
    # The book's settings at a fifth of the learning rate: at the book's own, Adam and RMSProp oscillate
    # on full batch (loss 0.18, 0.41, 0.14, 0.32, ...), and an oscillating trajectory grows float32's
    # rounding past 1e-5 whatever the implementation; this checks the formulas, not the chaos.
    hyper = {h: v / 5 if h == "lr" else v for h, v in PARAMS.book[name].items()}
    ours = engine.train(small, name, hyper, [7], protocol, "mlp")
    theta = network.initial_params(7, SIZES).astype(np.float64)
    order = randomness.batch_order(7, rows, protocol)
    X, y = small.features.astype(np.float64), small.target.astype(np.float64)
    state, losses, bands = {}, [], []
    for t, rows_t in enumerate(order.reshape(-1, batch), start=1):
        theta, eff = numpy_step(name, theta, numpy_network(theta, X, y, rows_t), state, hyper, t)
        losses.append(numpy_loss(theta, X, y))
        eff = np.broadcast_to(eff, theta.shape)
        bands.append([np.quantile(eff[a:b], q) for a, _, b in network.layer_slices(SIZES) for q in network.QUANTILES])
    assert ours.losses.shape == (1, 100)
    np.testing.assert_allclose(ours.losses[0], losses, rtol=1e-5)
    np.testing.assert_allclose(ours.effective_lr[0], bands, rtol=2e-4)
    assert ours.initial_loss[0] == pytest.approx(numpy_loss(network.initial_params(7, SIZES).astype(float), X, y))


@pytest.mark.parametrize("name", ALL)
def test_network_batched_call_equals_single_calls(name, dataset, params):
    """Rows never mix: five configurations (two sharing a seed) in one call equal five calls, bit
    for bit, loss, parameters and effective lr; a shared seed means the same start and batches. On
    a 2-core machine the five train as two concurrent compiled calls of three rows (one padded)."""
    protocol = dataclasses.replace(config.protocol(params, "mlp"), epochs=2)
    hyper = {h: np.array([v * f for f in (0.5, 1.0, 1.0, 2.0, 0.5)]) if h == "lr" else np.array([v, v, v ** 2, v, v ** 2])
             for h, v in PARAMS.book[name].items()}
    seeds = np.array([0, 4, 4, 1, 0])
    batched = engine.train(dataset, name, hyper, seeds, protocol, "mlp")
    for i in range(5):
        single = engine.train(dataset, name, {h: v[i] for h, v in hyper.items()}, [seeds[i]], protocol, "mlp")
        np.testing.assert_array_equal(batched.losses[i], single.losses[0])
        np.testing.assert_array_equal(batched.params[i], single.params[0])
        np.testing.assert_array_equal(batched.effective_lr[i], single.effective_lr[0])
    assert batched.initial_loss[1] == batched.initial_loss[2] != batched.initial_loss[0]


def test_optimizers_side_by_side_equal_their_own_calls(dataset, params):
    """evaluate trains a network's optimizers side by side (engine.train_optimizers): each result
    equals its optimizer's call on its own, bit for bit, and comes back under its own name; the
    linear model's path gives the same as its own calls too."""
    groups = {name: [(params.book[name], [3, 5]), ({**params.book[name], "lr": params.book[name].get("lr", 1.0) / 2}, [5])]
              for name in ("sgd", "adagrad", "rmsprop")}
    for problem in ("mlp", "linreg"):
        protocol = dataclasses.replace(config.protocol(params, problem), epochs=1)
        together = engine.train_optimizers(dataset, groups, protocol, problem)
        assert list(together) == list(groups)
        for name, group in groups.items():
            alone = engine.train_groups(dataset, name, group, protocol, problem)
            for ours, theirs in zip(together[name], alone, strict=True):
                np.testing.assert_array_equal(ours.losses, theirs.losses)
                np.testing.assert_array_equal(ours.params, theirs.params)
                np.testing.assert_array_equal(ours.effective_lr, theirs.effective_lr)
        assert together["sgd"][0].losses[0, -1] != together["rmsprop"][0].losses[0, -1]


def test_side_by_side_keeps_order_and_raises_an_error_from_beside(monkeypatch):
    """engine.side_by_side (evaluate's problems, a network's optimizers): results come back in the
    given order, the first computed in the calling thread; an error in one computed beside the
    first reaches the caller (it is not lost in its thread)."""
    import threading

    monkeypatch.setattr(engine, "_CORES", 2)  # as on a 2-core machine: on one core it runs in turn, in this thread
    main = threading.current_thread()
    ran = engine.side_by_side(lambda name: (name, threading.current_thread() is main), ["linreg", "mlp", "third"])
    assert list(ran) == ["linreg", "mlp", "third"]
    assert ran["linreg"] == ("linreg", True) and ran["mlp"] == ("mlp", False) and ran["third"] == ("third", False)

    def fails_beside(name):
        if name == "mlp":
            raise ValueError("mlp: no studies")
        return name

    with pytest.raises(ValueError, match="mlp: no studies"):
        engine.side_by_side(fails_beside, ["linreg", "mlp"])


def test_network_protocol_keeps_every_book_setting_improving(dataset, params):
    """The premise of the problem (README, "The problems"): at the end of the registry's protocol the
    model still needs updates (every book setting's mean loss falls over the last fifth of training,
    two epochs, on eight evaluation seeds; one epoch is within minibatch noise for some), and Adagrad's rates have kept falling while RMSProp's have not."""
    protocol = config.protocol(params, "mlp")
    seeds = np.arange(params.evaluate.first_seed, params.evaluate.first_seed + 8)
    per_epoch = round(len(dataset.target) / protocol.record_every)
    medians = {}
    for name in ALL:
        result = engine.train(dataset, name, params.book[name], seeds, protocol, "mlp")
        mean = result.losses.mean(axis=0)
        assert mean[-1] < mean[-1 - 2 * per_epoch], (name, mean[-1 - 2 * per_epoch:])
        medians[name] = result.effective_lr.mean(axis=0)[:, 1::3]  # each layer's median
    assert (medians["adagrad"][-1] < 0.8 * medians["adagrad"][0]).all()
    assert (np.diff(medians["adagrad"], axis=0) <= 0).all()
    assert (medians["rmsprop"][-1] > medians["rmsprop"][len(medians["rmsprop"]) // 2]).any()


def test_registry_names_the_columns_and_the_layers(dataset):
    assert problems.get("mlp").sizes(5) == SIZES
    assert network.layer_slices(SIZES)[-1] == (4544, 4608, 4609)
    assert len(problems.get("mlp").lr_columns(5)) == 9 and problems.get("linreg").lr_columns(5)[-1] == "b"
    with pytest.raises(Exception, match="unknown problem 'cnn': choose one of digits, linreg, mlp, quadratic_deep"):
        problems.get("cnn")


def test_the_cached_starting_loss_keeps_datasets_and_seeds_apart(dataset):
    """network.starting_loss caches per process: three datasets in one process (another target, fewer
    rows), each asked twice and with a seed repeated, each get this file's own float64 loss."""
    X, y = dataset.features, dataset.target
    cases = [(X, y), (X, y[::-1].copy()), (X[:700], y[:700])]
    for features, target in cases * 2:  # the second pass reads the cache
        got = network.starting_loss(features, target, [0, 3, 0], SIZES, "tanh")
        want = [numpy_loss(network.initial_params(s, SIZES).astype(np.float64), features.astype(np.float64),
                           target.astype(np.float64)) for s in (0, 3, 0)]
        np.testing.assert_allclose(got, want, rtol=1e-12)
    firsts = [network.starting_loss(f, t, [0], SIZES, "tanh")[0] for f, t in cases]
    assert len(set(firsts)) == 3  # three different numbers: no dataset was served another's
