"""The training engine: the book's numbers, reproducibility, batching and divergence."""
import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.core import engine, reference
from conftest import ROOT, assert_one_line_error, run_env


def test_book_rmsprop_run_ends_near_0245(dataset, params):
    result = engine.train(dataset, "rmsprop", {"lr": 0.01, "gamma": 0.9}, [0, 1, 2, 3, 4], params.train, "linreg")
    assert list(result.examples) == list(range(200, 3001, 200))
    assert result.losses.shape == (5, 15) and result.effective_lr.shape == (5, 15, 6)
    assert ((result.final_loss > 0.240) & (result.final_loss < 0.255)).all(), result.final_loss
    assert not result.diverged.any()
    # Never below the least-squares floor; above it by a little.
    floor = dataset.stats["least_squares"]["loss"]
    assert (result.losses > floor).all()


def test_loss_equals_direct_mean_over_all_rows(dataset, params):
    result = engine.train(dataset, "adagrad", {"lr": 0.1}, [7], params.train, "linreg")
    w, b = result.params[0, :-1].astype(np.float64), result.params[0, -1]
    direct = np.mean((dataset.features @ w + b - dataset.target) ** 2) / 2
    assert result.final_loss[0] == pytest.approx(direct, rel=1e-6)


def test_engine_matches_the_books_eager_loop(dataset, params):
    ours = engine.train(dataset, "sgd", {"lr": 0.05}, [11], params.train, "linreg")
    book = reference.train_eager(dataset, "linreg", "sgd", {"lr": 0.05}, 11, params.train)
    np.testing.assert_allclose(ours.losses, book.losses, rtol=2e-6)


def test_short_last_batch_is_handled_like_the_book(dataset, params):
    """batch 7 does not divide 1500: the last batch of each epoch has 2 rows, as tf.data gives."""
    protocol = params.train.__class__(**{**params.train.__dict__, "batch_size": 7, "record_every": 100})
    ours = engine.train(dataset, "rmsprop", {"lr": 0.01, "gamma": 0.9}, [1], protocol, "linreg")
    book = reference.train_eager(dataset, "linreg", "rmsprop", {"lr": 0.01, "gamma": 0.9}, 1, protocol)
    assert list(ours.examples) == [700, 1400, 1500, 2200, 2900, 3000]  # seen % 100 == 0, as the book counts
    np.testing.assert_array_equal(ours.examples, book.examples)
    np.testing.assert_allclose(ours.losses, book.losses, rtol=5e-6)


def test_same_seed_same_bits_different_seed_different_run(dataset, params):
    a = engine.train(dataset, "rmsprop", {"lr": 0.01, "gamma": 0.9}, [5], params.train, "linreg")
    b = engine.train(dataset, "rmsprop", {"lr": 0.01, "gamma": 0.9}, [5], params.train, "linreg")
    c = engine.train(dataset, "rmsprop", {"lr": 0.01, "gamma": 0.9}, [6], params.train, "linreg")
    assert a.losses.tobytes() == b.losses.tobytes()
    assert a.effective_lr.tobytes() == b.effective_lr.tobytes()
    assert not np.array_equal(a.losses, c.losses)


def test_batched_call_equals_single_calls(dataset, params):
    lrs = np.array([0.003, 0.01, 0.03, 0.01, 0.2])
    gammas = np.array([0.9, 0.5, 0.99, 0.9, 0.95])
    seeds = np.array([0, 1, 2, 0, 9])
    batched = engine.train(dataset, "rmsprop", {"lr": lrs, "gamma": gammas}, seeds, params.train, "linreg")
    for i in range(len(lrs)):
        single = engine.train(dataset, "rmsprop", {"lr": lrs[i], "gamma": gammas[i]}, [seeds[i]], params.train, "linreg")
        np.testing.assert_array_equal(batched.losses[i], single.losses[0])
        np.testing.assert_array_equal(batched.effective_lr[i], single.effective_lr[0])
        np.testing.assert_array_equal(batched.params[i], single.params[0])


def test_groups_trained_together_equal_their_own_calls(dataset, params):
    groups = [({"lr": 0.01, "gamma": 0.9}, np.arange(3)),  # one setting over seeds
              ({"lr": np.array([0.003, 0.03]), "gamma": np.array([0.99, 0.5])}, np.array([7])),  # a grid on one seed
              ({"lr": 0.02, "gamma": 0.95}, np.array([4, 5]))]
    together = engine.train_groups(dataset, "rmsprop", groups, params.train, "linreg")
    assert [len(r.losses) for r in together] == [3, 2, 2]
    for (hyper, seeds), got in zip(groups, together):
        alone = engine.train(dataset, "rmsprop", hyper, seeds, params.train, "linreg")
        for field in ("losses", "effective_lr", "params", "diverged"):
            np.testing.assert_array_equal(getattr(got, field), getattr(alone, field))


def test_divergence_is_flagged_per_configuration(dataset, params):
    result = engine.train(dataset, "sgd", {"lr": [1.0, 0.05, 3.0]}, [0], params.train, "linreg")
    assert list(result.diverged) == [True, False, True]
    assert np.isnan(result.final_loss[[0, 2]]).all() and np.isfinite(result.final_loss[1])


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=run_env(),
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def prepared_project(tmp_path_factory, raw_file):
    """A project directory holding params.yaml and prepared data, made by the real commands."""
    import shutil
    root = tmp_path_factory.mktemp("cli")
    shutil.copy(ROOT / "params.yaml", root)
    (root / "data/raw").mkdir(parents=True)
    shutil.copy(raw_file, root / "data/raw/airfoil_self_noise.dat")
    assert _cli("prepare", cwd=root).returncode == 0
    return root


def test_train_command_json_is_reproducible_across_processes(prepared_project):
    runs = [_cli("train", "--optimizer", "rmsprop", "--lr", "0.01", "--gamma", "0.9", "--seed", "4", "--json",
                 cwd=prepared_project) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    first, second = (json.loads(r.stdout) for r in runs)
    assert first == second
    assert first["examples"] == list(range(200, 3001, 200))
    assert len(first["losses"]) == 15 and first["final_loss"] == first["losses"][-1]
    assert len(first["effective_lr"]) == 15 and len(first["effective_lr"][0]) == 6
    assert 0.240 < first["final_loss"] < 0.255


def test_train_command_runs_a_schedule_with_its_settings(prepared_project):
    """`train --schedule` with a setting at a non-default value: the JSON names both, the recorded
    effective lr falls to that fraction, and a setting the schedule does not read is refused in one line."""
    out = _cli("train", "--optimizer", "sgd", "--schedule", "warmup_cosine", "--final", "0.2", "--json",
              cwd=prepared_project)
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout)
    assert run["schedule"] == "warmup_cosine" and run["schedule_settings"] == {"final": 0.2, "warmup": 0.1}
    constant = json.loads(_cli("train", "--optimizer", "sgd", "--json", cwd=prepared_project).stdout)
    from test_scheduled_training import readme_factors
    expected = readme_factors("warmup_cosine", 300, final=0.2, warmup=0.1)  # 300 updates: 1500 rows, batch 10, 2 epochs
    np.testing.assert_allclose(run["schedule_factors"], expected, rtol=1e-6, atol=1e-7)
    assert run["schedule_factors"][0] == 0.0 and run["schedule_factors"][-1] == np.float32(0.2)
    # The effective lr after the last update is exactly 0.2 of the constant run's (in float32).
    assert np.float32(run["effective_lr"][-1][0]) == np.float32(0.2) * np.float32(constant["effective_lr"][-1][0])
    plain = _cli("train", "--optimizer", "sgd", "--schedule", "warmup_cosine", "--final", "0.2", cwd=prepared_project)
    assert plain.stdout.splitlines()[1] == ("schedule warmup_cosine: the rate times 0 at update 0, "
                                            f"{expected[150]:.4g} at update 150, 0.2 at update 299 "
                                            "(--json lists every update's)")
    assert_one_line_error(_cli("train", "--optimizer", "sgd", "--schedule", "cosine", "--drop", "0.5",
                              cwd=prepared_project), "--drop does not apply to the cosine schedule: it reads --final")


def test_train_command_reports_divergence_not_a_number(prepared_project):
    text = _cli("train", "--optimizer", "sgd", "--lr", "1", cwd=prepared_project)
    assert text.returncode == 0 and text.stdout.startswith("diverged")
    as_json = json.loads(_cli("train", "--optimizer", "sgd", "--lr", "1", "--json", cwd=prepared_project).stdout)
    assert as_json["diverged"] is True and as_json["final_loss"] is None


def test_quadratic_command_prints_line_and_saves_trace(prepared_project, tmp_path):
    out = _cli("quadratic", "--optimizer", "rmsprop", "--eta", "0.4", "--gamma", "0.9",
               "--trace", str(tmp_path / "trace.csv"), cwd=prepared_project)
    assert out.stdout.strip() == "epoch 20, x1: -0.010599, x2: 0.000000"
    trace = np.loadtxt(tmp_path / "trace.csv", delimiter=",", skiprows=1)
    assert trace.shape == (21, 4) and trace[-1, 1] == pytest.approx(-0.010599, abs=1e-6)


def test_quadratic_runs_the_2d_setting_from_params_and_names_a_missing_one(prepared_project):
    """The 2-D demo's setting comes from evaluate.quadratic (momentum: lr 0.4, beta 0.5), never from
    the book's (lr 0.005, beta 0.9); with neither in params.yaml nor on the command line, one line
    names what to add."""
    import yaml

    listed = _cli("quadratic", "--optimizer", "momentum", cwd=prepared_project)
    explicit = _cli("quadratic", "--optimizer", "momentum", "--lr", "0.4", "--beta", "0.5", cwd=prepared_project)
    book = _cli("quadratic", "--optimizer", "momentum", "--lr", "0.005", "--beta", "0.9", cwd=prepared_project)
    assert listed.returncode == 0 and listed.stdout == explicit.stdout != book.stdout
    raw = yaml.safe_load((prepared_project / "params.yaml").read_text())
    del raw["evaluate"]["quadratic"]["momentum"]  # momentum is not in study.optimizers: params stay valid
    (prepared_project / "unlisted.yaml").write_text(yaml.safe_dump(raw))
    assert_one_line_error(_cli("--params", "unlisted.yaml", "quadratic", "--optimizer", "momentum", cwd=prepared_project),
                          "params.yaml has no evaluate.quadratic.momentum: add it, or pass --lr, --beta")
    partial = _cli("--params", "unlisted.yaml", "quadratic", "--optimizer", "momentum", "--lr", "0.4", "--beta", "0.5",
                   cwd=prepared_project)
    assert partial.stdout == explicit.stdout


def test_a_schedule_of_over_a_million_steps_compiles_and_trains(dataset, params):
    """Buffer shapes must not depend on the schedule's values: XLA stops folding those into
    compile-time constants at about a million steps (it failed at 700 epochs of batch 1)."""
    protocol = params.train.__class__(**{**params.train.__dict__, "batch_size": 1, "epochs": 700,
                                         "record_every": 150_000})
    result = engine.train(dataset, "sgd", {"lr": 0.001}, [0], protocol, "linreg")
    assert list(result.examples) == list(range(150_000, 1_050_001, 150_000))
    floor = dataset.stats["least_squares"]["loss"]
    assert not result.diverged[0] and result.final_loss[0] < 1.05 * floor


def test_a_finite_loss_above_diverge_factor_counts_as_diverged(dataset, params):
    """SGD at lr 0.35 to 0.45 on linear regression: the loss rises to 1.3 to 2.3 times its start and
    comes back down, finite throughout. With train.diverge_factor 1.5 exactly the runs whose loss ever
    went past 1.5 times the start (read from the same runs with the rule off) count as diverged."""
    import dataclasses
    every_step = dataclasses.replace(params.train, record_every=params.train.batch_size)
    lrs = np.array([0.32, 0.35, 0.38, 0.45])
    free = engine.train(dataset, "sgd", {"lr": lrs}, [0], dataclasses.replace(every_step, diverge_factor=1e30), "linreg")
    assert np.isfinite(free.losses).all() and not free.diverged.any()
    start = engine.initial_loss(dataset, [0], every_step, "linreg")[0]
    expected = free.losses.max(axis=1) > 1.5 * start
    assert expected.tolist() == [False, False, True, True]  # the factor falls between the runs
    ruled = engine.train(dataset, "sgd", {"lr": lrs}, [0], dataclasses.replace(every_step, diverge_factor=1.5), "linreg")
    assert ruled.diverged.tolist() == expected.tolist()
    np.testing.assert_array_equal(ruled.final_loss[~expected], free.final_loss[~expected])
    assert np.isnan(ruled.final_loss[expected]).all()
