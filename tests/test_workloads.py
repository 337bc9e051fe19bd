"""The workloads beyond the airfoil data: DeepOBS's quadratic_deep as DeepOBS itself builds it, and
every optimizer's trajectory on it against an independent float64 computation."""
import dataclasses
import importlib.util
import subprocess
import sys
import types

import numpy as np
import pytest

from pipeline.core import config, deep_quadratic, engine, problems, randomness
from conftest import PARAMS
from test_optimizers import ALL, numpy_step

QUADRATIC = problems.get("quadratic_deep")


@pytest.fixture(scope="module")
def deepobs_source(tmp_path_factory):
    """DeepOBS 1.1.2's own quadratic_deep.py, from its wheel on PyPI (not installed: it is TensorFlow 1
    code; building the Hessian needs only NumPy, so its base class is stubbed)."""
    where = tmp_path_factory.mktemp("deepobs")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(where),
                    "deepobs==1.1.2"], check=True, capture_output=True, timeout=300)
    wheel = next(where.glob("deepobs-1.1.2-*.whl"))
    import zipfile
    with zipfile.ZipFile(wheel) as z:
        z.extract("deepobs/tensorflow/testproblems/quadratic_deep.py", where)
        z.extract("deepobs/tensorflow/datasets/quadratic.py", where)
    return where / "deepobs/tensorflow"


def _deepobs_quadratic_deep(source):
    package = types.ModuleType("deepobs_stub")
    package.__path__ = []
    base = types.ModuleType("deepobs_stub._quadratic")

    class QuadraticBase:
        def __init__(self, batch_size, weight_decay, hessian):
            self.hessian = hessian

    base._quadratic_base = QuadraticBase
    sys.modules.update({"deepobs_stub": package, "deepobs_stub._quadratic": base})
    spec = importlib.util.spec_from_file_location("deepobs_stub.quadratic_deep", source / "testproblems/quadratic_deep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_instance_is_deepobs_first_and_every_build_is_the_same(deepobs_source):
    """DeepOBS's module-level generator: its first instance in a process is the published one, later
    ones differ (their PR #44). Ours is that first instance, however often it is built."""
    module = _deepobs_quadratic_deep(deepobs_source)
    first, second = module.quadratic_deep(128).hessian, module.quadratic_deep(128).hessian
    assert not np.allclose(first, second)
    hessian, train, test = deep_quadratic.instance()
    np.testing.assert_array_equal(hessian, first)
    deep_quadratic.instance.cache_clear()
    np.testing.assert_array_equal(deep_quadratic.instance()[0], first)  # built again: the same
    # The points as DeepOBS's data set draws them (datasets/quadratic.py: seeds 42 and 43, noise 0.6).
    text = (deepobs_source / "datasets/quadratic.py").read_text()
    assert "np.random.RandomState(42)" in text and "np.random.RandomState(43)" in text and "noise_level=0.6" in text
    np.testing.assert_array_equal(train, np.float32(np.random.RandomState(42).normal(0.0, 0.6, (1000, 100))))
    np.testing.assert_array_equal(test, np.float32(np.random.RandomState(43).normal(0.0, 0.6, (1000, 100))))
    eigenvalues = np.linalg.eigvalsh(hessian)
    assert (eigenvalues[:90] < 1).all() and (30 < eigenvalues[90:]).all() and (eigenvalues[90:] < 60).all()


def test_the_closed_form_floor_is_the_minimum():
    """0.5 (theta - m)^T H (theta - m) + c: the loss at the training points' mean is c, any step away
    raises it, and c equals the direct mean over the points."""
    _, train, _ = deep_quadratic.instance()
    m, c = deep_quadratic.offset(train)
    assert QUADRATIC.closed_floor(QUADRATIC.data(None)) == c
    rng = np.random.default_rng(0)
    around = m[None] + 1e-3 * rng.normal(size=(20, 100))
    assert (deep_quadratic.mean_loss(around, train) > c).all()
    direct = 0.5 * np.mean([(m - x) @ np.float32((deep_quadratic.instance()[0] + deep_quadratic.instance()[0].T) / 2)
                            .astype(np.float64) @ (m - x) for x in train.astype(np.float64)])
    assert c == pytest.approx(direct, rel=1e-12)


def _float64_run(name: str, hyper: dict, seed: int, protocol) -> list:
    """theta from ones; each step the mean per-example gradient H (theta - x) over the batch; the
    loss over all 1,000 training points after each step, all in float64."""
    hessian = deep_quadratic.instance()[0]
    h = np.float32((hessian + hessian.T) / 2).astype(np.float64)
    _, train, _ = deep_quadratic.instance()
    x = train.astype(np.float64)
    theta, state, losses = np.ones(100), {}, []
    b, batches = protocol.batch_size, []
    for epoch in randomness.batch_order(seed, 1000, protocol):  # each epoch's permutation, batched
        order = epoch.reshape(-1)[:1000]  # the padding of a short last batch left out
        batches += [order[i:i + b] for i in range(0, len(order), b) if len(order[i:i + b]) == b
                    or not protocol.drop_remainder]
    for t, rows in enumerate(batches, start=1):
        g = np.mean([h @ (theta - x[i]) for i in rows], axis=0)
        theta, _ = numpy_step(name, theta, g, state, hyper, t)
        losses.append(deep_quadratic.mean_loss(theta[None], train)[0])
    return losses


@pytest.mark.parametrize("batching", ["full batch", "minibatch", "remainder kept"])
@pytest.mark.parametrize("name", ALL)
def test_quadratic_deep_follows_float64_for_100_steps(name, batching):
    """Full batch: 100 steps of all 1,000 points. Minibatch: DeepOBS's batches of 128 with the
    remainder dropped, 15 epochs of 7 steps; or kept, 13 epochs of 7 full batches and one of 104.
    The loss after every step to 1e-5 relative."""
    base = config.protocol(PARAMS, "quadratic_deep")
    assert base.drop_remainder and base.batch_size == 128
    protocol = {"full batch": dataclasses.replace(base, batch_size=1000, epochs=100, record_every=1000),
                "minibatch": dataclasses.replace(base, epochs=15, record_every=128),
                "remainder kept": dataclasses.replace(base, epochs=13, record_every=8, drop_remainder=False)}[batching]
    hyper = {h: v / 20 if h == "lr" else v for h, v in PARAMS.book[name].items()}  # eigenvalues up to 53
    ours = engine.train(QUADRATIC.data(None), name, hyper, [5], protocol, "quadratic_deep")
    expected = _float64_run(name, hyper, 5, protocol)
    assert len(expected) >= 100 and not ours.diverged[0]
    np.testing.assert_allclose(ours.losses[0], expected, rtol=1e-5)
    assert expected[-1] < expected[0]  # it trained


def test_the_new_problems_run_through_every_stage_with_their_floors_and_held_out_scores(raw_file, tmp_path):
    """quadratic_deep and digits: their studies, their evaluation (the closed-form floor, the held-out
    scores of every family with intervals, the claim on a convex and a deep problem) and their report
    sections, through the stages' own code."""
    import json

    from pipeline.core import data
    from pipeline.stages import prepare
    from test_variations import DEFAULTS, TINY, check_complete_and_finite, merged, run_pipeline
    raw = merged(DEFAULTS, merged(TINY, {"study": {"problems": ["quadratic_deep", "digits"],
                                                   "optimizers": ["adagrad", "rmsprop"]},
                                         "protocols": {"quadratic_deep": {"epochs": 20, "record_every": 1792},
                                                       "digits": {"epochs": 3}}}))
    params = config.parse_params(raw)
    prepare.prepare(raw_file, tmp_path / "prepared", params.data.n_rows, params.data.sha1)
    _, captions = run_pipeline(params, data.load_prepared(tmp_path / "prepared"), tmp_path)
    everything = check_complete_and_finite(params, tmp_path, captions)
    summary = everything["problems"]["quadratic_deep"]
    _, train, test = deep_quadratic.instance()
    assert summary["floor"] == deep_quadratic.offset(train)[1] and summary["floor_kind"] == "closed_form"
    assert summary["protocol"] == {"batch_size": 128, "epochs": 20, "record_every": 1792, "steps": 140}
    assert summary["target"]["rule"] == "within 1% of the closed-form floor"
    seeds = summary["seeds"]
    for o in ("adagrad", "rmsprop"):
        s = summary["optimizers"][o]
        best = json.loads((tmp_path / f"studies/quadratic_deep/{o}/constant/best.json").read_text())
        again = engine.train(QUADRATIC.data(None), o, best["hyperparams"], seeds, config.protocol(params, "quadratic_deep"),
                             "quadratic_deep")
        held = deep_quadratic.mean_loss(again.params, test)  # the tuned setting re-run here, scored on the test points
        assert s["tuned_held_out_loss"]["mean"] == pytest.approx(held.mean(), rel=1e-12)
        assert s["tuned_held_out_loss"]["mean"] > summary["floor"] and s["tuned_held_out_loss"]["ci95"] > 0
        assert set(s) >= {"book_held_out_loss", "defaults_held_out_loss"}
    assert summary["adagrad_vs_rmsprop"]["tuned"]["verdict"] in ("better", "worse", "equivalent", "inconclusive")
    page = (tmp_path / "reports/report.html").read_text()
    assert "DeepOBS quadratic_deep (convex, 100-D): Results" in page and "tuned held-out loss (95% CI)" in page
    classifier = everything["problems"]["digits"]
    assert classifier["protocol"] == {"batch_size": 32, "epochs": 3, "record_every": 1347, "steps": 129}
    for o in ("adagrad", "rmsprop"):
        s = classifier["optimizers"][o]
        best = json.loads((tmp_path / f"studies/digits/{o}/constant/best.json").read_text())
        again = engine.train(DIGITS.data(None), o, best["hyperparams"], classifier["seeds"],
                             config.protocol(params, "digits"), "digits")
        scores = DIGITS.held_out_metrics(again.params)
        assert s["tuned_held_out_accuracy"]["mean"] == pytest.approx(scores["accuracy"].mean(), rel=1e-12)
        assert s["tuned_held_out_loss"]["mean"] == pytest.approx(scores["loss"].mean(), rel=1e-12)
        assert 0.8 < s["tuned_held_out_accuracy"]["mean"] <= 1  # it learned to tell digits apart
        assert set(s["effective_lr_ratio"]) == {"layer1", "layer2", "layer3"}
    assert "tuned held-out accuracy (95% CI)" in page and "The chapter&#39;s claim" in page
    from conftest import read_csv
    for problem, metrics in (("quadratic_deep", ["loss"]), ("digits", ["loss", "accuracy"])):
        rows = read_csv(tmp_path / f"reports/evaluation/{problem}/curves.csv")
        last = max(int(r["examples"]) for r in rows)
        for metric in metrics:  # the curve's last record is the summary's held-out score, seed by seed
            end = [float(r[f"held_out_{metric}"]) for r in rows if r["family"] == "tuned" and r["optimizer"] == "adagrad"
                   and int(r["examples"]) == last]
            want = everything["problems"][problem]["optimizers"]["adagrad"][f"tuned_held_out_{metric}"]["mean"]
            assert np.mean(end) == pytest.approx(want, rel=1e-6)


def test_train_json_carries_the_split_and_the_preprocessing(raw_file, tmp_path):
    """Enough to rebuild a run's data: the airfoil rows and the standardization's constants (against
    the raw file read here), and quadratic_deep's points from the draws it names."""
    import json

    from conftest import cli, prepared_project
    root = prepared_project(tmp_path / "project", raw_file)
    linreg = json.loads(cli("train", "--optimizer", "sgd", "--json", cwd=root).stdout)["data"]
    table = np.genfromtxt(raw_file, delimiter="\t")
    assert linreg["train_rows"] == list(range(1500)) and linreg["held_out_rows"] == []
    np.testing.assert_allclose(linreg["preprocessing"]["means"], table.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(linreg["preprocessing"]["stds"], table.std(axis=0), rtol=1e-12)
    run = json.loads(cli("train", "--problem", "quadratic_deep", "--optimizer", "rmsprop", "--lr", "0.005", "--json",
                         cwd=root).stdout)
    record = run["data"]
    train = np.float32(eval(record["train_points"], {"numpy": np}))  # the draw it names, made here
    test = np.float32(eval(record["held_out_points"], {"numpy": np}))
    assert np.array_equal(train, deep_quadratic.instance()[1]) and np.array_equal(test, deep_quadratic.instance()[2])
    hessian = deep_quadratic.instance()[0]
    used = np.float32((hessian + hessian.T) / 2).astype(np.float64)  # the float32 matrix training uses
    np.testing.assert_allclose(record["hessian_eigenvalues"], np.linalg.eigvalsh(used), rtol=1e-9)
    assert run["initial_parameters"] == [{"theta": [1.0] * 100}]
    assert run["protocol"]["drop_remainder"] is True and len(run["losses"]) == 100  # one record per epoch


DIGITS = problems.get("digits")


def _softmax_network_step_grads(theta, x, labels, sizes):
    """Mean softmax cross-entropy over the rows and its gradient, float64, for a tanh network with
    one output per class: written out here (forward, softmax, backward) apart from network.py."""
    layers, at = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = theta[at:at + fan_in * fan_out].reshape(fan_in, fan_out)
        b = theta[at + fan_in * fan_out:at + fan_in * fan_out + fan_out]
        layers.append((w, b))
        at += fan_in * fan_out + fan_out
    hs = [x]
    for i, (w, b) in enumerate(layers):
        z = hs[-1] @ w + b
        hs.append(np.tanh(z) if i < len(layers) - 1 else z)
    logits = hs[-1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    onehot = np.eye(sizes[-1])[labels]
    loss = float(np.mean(-np.log((p * onehot).sum(axis=1))))
    dz, grads = (p - onehot) / len(x), []
    for i in reversed(range(len(layers))):
        grads = [hs[i].T @ dz, dz.sum(axis=0)] + grads
        if i > 0:
            dz = (dz @ layers[i][0].T) * (1 - hs[i] ** 2)
    return loss, np.concatenate([g.ravel() for g in grads])


def test_the_digits_split_is_stratified_seeded_and_scaled_from_the_training_part():
    from sklearn.datasets import load_digits
    images = load_digits()
    record = DIGITS.data_record(DIGITS.data(None))
    train, test = np.array(record["train_rows"]), np.array(record["held_out_rows"])
    assert len(train) == 1347 and len(test) == 450 and not set(train) & set(test)
    assert sorted([*train, *test]) == list(range(1797))
    share = np.bincount(images.target[test], minlength=10) / np.bincount(images.target, minlength=10)
    assert np.all(np.abs(share - 0.25) < 0.02)  # every class held out in proportion
    means = images.data[train].mean(axis=0)
    stds = images.data[train].std(axis=0)
    np.testing.assert_allclose(record["preprocessing"]["means"], means, rtol=1e-12)
    np.testing.assert_allclose(record["preprocessing"]["scales"], np.where(stds == 0, 1.0, stds), rtol=1e-12)
    features = DIGITS.data(None).features
    np.testing.assert_allclose(features, ((images.data[train] - means) / np.where(stds == 0, 1, stds)), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("batching", ["full batch", "minibatch"])
@pytest.mark.parametrize("name", ALL)
def test_digits_follows_float64_for_100_steps(name, batching):
    """The classifier on 200 training images: 100 full-batch steps, or 100 minibatch steps of 20
    (10 epochs), the cross-entropy over the 200 after every step to 1e-5 relative."""
    data = DIGITS.data(None)
    small = data._replace(features=data.features[:200], target=data.target[:200])
    base = config.protocol(PARAMS, "digits")
    protocol = (dataclasses.replace(base, batch_size=200, epochs=100, record_every=200) if batching == "full batch"
                else dataclasses.replace(base, batch_size=20, epochs=10, record_every=20))
    hyper = {h: v / 2 if h == "lr" else v for h, v in PARAMS.book[name].items()}
    ours = engine.train(small, name, hyper, [4], protocol, "digits")
    sizes = DIGITS.sizes(64)
    theta = DIGITS.initial_params(4, 64, protocol).astype(np.float64)
    x, labels = small.features.astype(np.float64), small.target.astype(int)
    state, losses = {}, []
    for t, rows in enumerate(randomness.batch_order(4, 200, protocol).reshape(-1, protocol.batch_size), start=1):
        _, g = _softmax_network_step_grads(theta, x[rows], labels[rows], sizes)
        theta, _ = numpy_step(name, theta, g, state, hyper, t)
        losses.append(_softmax_network_step_grads(theta, x, labels, sizes)[0])
    assert len(losses) == 100 and not ours.diverged[0] and losses[-1] < losses[0]
    np.testing.assert_allclose(ours.losses[0], losses, rtol=1e-5)
    assert ours.initial_loss[0] == pytest.approx(_softmax_network_step_grads(
        DIGITS.initial_params(4, 64, protocol).astype(np.float64), x, labels, sizes)[0], rel=1e-6)


def test_at_its_protocol_every_book_setting_still_improves_on_digits(params):
    """The protocol's length was chosen so (6 epochs: at 8 the book's RMSProp had stopped, 0.0018 ->
    0.0020): on eight evaluation seeds each optimizer's mean training loss still falls by a tenth or more
    over the last epoch, and the held-out accuracy is well above chance."""
    protocol = config.protocol(params, "digits")
    assert (protocol.epochs, protocol.batch_size) == (6, 32)
    seeds = np.arange(1000, 1008)
    for name in ALL:
        result = engine.train(DIGITS.data(None), name, params.book[name], seeds, protocol, "digits")
        mean = result.losses.mean(axis=0)
        assert len(mean) == 6 and mean[-1] < 0.9 * mean[-2], (name, mean[-2:])
        assert DIGITS.held_out_metrics(result.params)["accuracy"].mean() > 0.9, name


@pytest.mark.parametrize("problem", ["digits", "quadratic_deep"])
def test_held_out_scores_at_every_record_equal_the_parameters_there(problem):
    """The loop scores the held-out data at each record: at epoch e they equal the host's float64
    scores of the parameters a run of e epochs ends with (the same seeds, the same batches)."""
    workload = problems.get(problem)
    base = config.protocol(PARAMS, problem)
    protocol = dataclasses.replace(base, epochs=4, record_every=base.record_every)
    hyper = {"lr": np.array([0.001, 0.003]), "gamma": 0.9}
    full = engine.train(workload.data(None), "rmsprop", hyper, [2, 3], protocol, problem)
    assert full.held_out.shape == (2, 4, len(workload.held_out_names))
    for epochs in (1, 3):
        part = engine.train(workload.data(None), "rmsprop", hyper, [2, 3], dataclasses.replace(protocol, epochs=epochs),
                            problem)
        host = workload.held_out_metrics(part.params)
        for j, metric in enumerate(workload.held_out_names):
            np.testing.assert_allclose(full.held_out[:, epochs - 1, j], host[metric], rtol=1e-6)
    assert problems.get("mlp").held_out_names == () and problems.get("linreg").held_out_names == ()
