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


def test_quadratic_deep_runs_through_every_stage_with_its_floor_and_held_out_loss(raw_file, tmp_path):
    """Its studies, its evaluation (the closed-form floor, the held-out loss of every family with its
    interval, the claim's test) and its report section, through the stages' own code."""
    import json

    from pipeline.core import data
    from pipeline.stages import prepare
    from test_variations import DEFAULTS, TINY, check_complete_and_finite, merged, run_pipeline
    raw = merged(DEFAULTS, merged(TINY, {"study": {"problems": ["quadratic_deep"], "optimizers": ["adagrad", "rmsprop"]},
                                         "protocols": {"quadratic_deep": {"epochs": 20, "record_every": 1792}}}))
    params = config.parse_params(raw)
    prepare.prepare(raw_file, tmp_path / "prepared", params.data.n_rows, params.data.sha1)
    _, captions = run_pipeline(params, data.load_prepared(tmp_path / "prepared"), tmp_path)
    summary = check_complete_and_finite(params, tmp_path, captions)["problems"]["quadratic_deep"]
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
