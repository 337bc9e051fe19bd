"""Every knob at a non-default value and every registered optimizer, through study -> evaluate ->
report (the stage functions the commands call, in this one TensorFlow process), with tiny budgets.
Each scenario checks that the stages' outputs are complete and finite."""
import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from pipeline.core import config, data, optimizers, paths, pieces, problems, tracking
from pipeline.stages import evaluate, prepare, report
from pipeline.stages import study as study_stage
from pipeline.stages.evaluate import landscape
from pipeline.stages.study import storage, outputs as study_outputs
from conftest import PARAMS, ROOT, cli, prepared_project, read_csv, run_env

DEFAULTS = yaml.safe_load((ROOT / "params.yaml").read_text())
# The scenarios vary knobs on the two airfoil problems; test_workloads runs quadratic_deep and digits
# through every stage.
TINY = {"study": {"n_trials": 3, "seeds_per_trial": 2, "problems": ["linreg", "mlp"]},
        "evaluate": {"seeds": 3, "framework_seeds": 1, "lr_points": 5, "grid_points": 4, "cube_points": 3,
                     "sampler_repeats": 2, "random_draws": 64, "refine_points": 3, "equivalence_margin": 0.05}}


def _nudged(setting: dict) -> dict:
    """A setting near the given one: learning rates halved, decays' memories doubled."""
    return {h: v / 2 if optimizers.hyperparameter(h).kind == "lr" else 1 - (1 - v) / 2 for h, v in setting.items()}


SCENARIOS = {
    # The whole chapter, every book and 2-D setting nudged, in an experiment of its own.
    "whole chapter": {
        "study": {"optimizers": sorted(optimizers.OPTIMIZERS)},
        "book": {o: _nudged(s) for o, s in DEFAULTS["book"].items()},
        "evaluate": {"quadratic": {o: _nudged(s) for o, s in DEFAULTS["evaluate"]["quadratic"].items()}},
        "mlflow": {"experiment": "whole-chapter"},
    },
    # Another protocol, objective and sampler seed; every scale on some hyperparameter; an RDB storage.
    "protocol and scales": {
        "data": {"n_rows": 1000},
        "train": {"batch_size": 7, "epochs": 1, "record_every": 100, "init": "zeros", "diverge_factor": 100,
                  "drop_remainder": True},
        "protocols": {"mlp": {"batch_size": 25, "epochs": 3, "record_every": 500}},
        "study": {"optimizers": ["rmsprop", "adam", "momentum"], "objective": "mean_loss", "seed": 3, "n_trials": 4,
                  "storage": "sqlite:///{root}/studies.db", "heartbeat_s": 1, "grace_s": 3,
                  "search_space": {"lr": {"low": 1e-3, "high": 0.3, "scale": "linear"},
                                   "gamma": {"low": 0.6, "high": 0.99, "scale": "log"},
                                   "beta": {"low": 0.1, "high": 0.9, "scale": "log"},
                                   "beta1": {"low": 0.4, "high": 0.95, "scale": "linear"},
                                   "beta2": {"low": 0.9, "high": 0.99999, "scale": "log"}}},
    },
    # Chapter 11.11: two schedules beside constant, one setting fixed, the others searched over new ranges.
    "schedules": {
        "study": {"optimizers": ["sgd", "adadelta"], "schedules": ["constant", "warmup_cosine", "multifactor"],
                  "search_space": {"final": {"low": 0.005, "high": 0.5, "scale": "linear"},
                                   "warmup": {"low": 0.1, "high": 0.1, "scale": "log"},
                                   "drop": {"low": 0.05, "high": 0.5, "scale": "linear"}}},
    },
    # The evaluation's knobs, and book settings that diverge on every seed.
    "evaluation and divergence": {
        "train": {"init_std": 0.1},
        "book": {"sgd": {"lr": 1.5}},
        "study": {"problems": ["linreg"], "optimizers": ["sgd", "adadelta"], "seeds_per_trial": 1,
                  "search_space": {"rho": {"low": 0.55, "high": 0.99, "scale": "linear"}}},
        "evaluate": {"seeds": 3, "first_seed": 50, "framework_seeds": 2, "floor_tolerance": 0.05,
                     "quadratic_steps": 7},
    },
}
# Knobs whose non-default values are exercised by other tests, through the real commands.
ELSEWHERE = {
    "data.url": "test_data: downloads from a local server",
    "data.sha1": "test_data: a wrong SHA-1 is refused (only the real file's is valid)",
    "data.timeout_s": "test_data: test_data_knobs_through_the_commands",
    "data.retries": "test_data: test_data_knobs_through_the_commands",
    "study.workers": "test_study_workers_setting_never_forks_beyond_it",
    "study.reconnect_s": "test_faults: test_workers_wait_out_a_database_restart (60), test_past_reconnect_s (2)",
    "study.problems": "test_a_new_problem_registered_in_one_place...; test_report: dvc exp run -S study.problems=[mlp]",
    "protocols.quadratic_deep.batch_size": "test_workloads: the float64 check, full batch (1000)",
    "protocols.quadratic_deep.epochs": "test_workloads: the float64 check (13, 15, 100) and every stage (20)",
    "protocols.quadratic_deep.record_every": "test_workloads: every step (8, 128, 1000) and every stage (1792)",
    "protocols.quadratic_deep.drop_remainder": "test_workloads: the float64 check with the remainder kept",
    "protocols.digits.batch_size": "test_workloads: the float64 check (200, 20)",
    "protocols.digits.epochs": "test_workloads: the float64 check (100, 10) and every stage (3)",
    "protocols.digits.record_every": "test_workloads: the float64 check, every step (200, 20)",
}


def merged(base: dict, edits: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in edits.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def leaves(tree: dict, prefix: str = "") -> dict:
    found = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        found.update(leaves(value, path + ".") if isinstance(value, dict) else {path: value})
    return found


def test_every_knob_is_varied_somewhere():
    """The matrix below (plus ELSEWHERE) sets every key of params.yaml to a non-default value."""
    varied = {k for edits in [TINY, *SCENARIOS.values()] for k, v in leaves(edits).items()
              if leaves(DEFAULTS).get(k, object()) != v}
    missing = set(leaves(DEFAULTS)) - varied - set(ELSEWHERE)
    assert not missing, sorted(missing)


def run_pipeline(params: config.Params, dataset: data.Dataset, root) -> tuple:
    """study -> evaluate -> report as `python -m pipeline <stage>` runs them, outputs under root."""
    with tracking.Tracker(f"sqlite:///{root}/mlflow.db", params.mlflow.experiment) as tracker:
        for p in params.study.problems:
            for o in params.study.optimizers:
                for schedule in params.study.schedules:
                    problem_params = config.for_problem(params, p, schedule)
                    store = storage.open_storage(params.study.storage, params.study, root / "studies")
                    own = problems.get(p).data(dataset)  # as the study stage does: the workload's data
                    result, sink, timings = study_stage.run_with(tracker, o, problem_params, own, store, {})
                    outcome = study_outputs.write_outputs(result, o, problem_params,
                                                          paths.study_dir(p, o, schedule, root / "studies"), timings)
                    study_outputs.log_study_summary(tracker, sink.parent_id, result, o, outcome, problem_params)
    summary = evaluate.evaluate(dataset, params, root / "studies", root / "reports/evaluation",
                                root / "reports/summary.json")
    inputs = report.Report(params, root / "reports/evaluation", root / "reports/summary.json", root / "studies",
                           dataset.stats)
    return summary, report.render(inputs, root / "reports", "test")


def check_complete_and_finite(params: config.Params, root, captions: dict) -> dict:
    text = (root / "reports/summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # a diverged seed is a count, never a NaN summary
    everything = json.loads(text)
    assert list(everything["problems"]) == params.study.problems
    n = len(params.study.optimizers)
    page, seeds = (root / "reports/report.html").read_text(), params.evaluate.seeds
    for p, summary in everything["problems"].items():
        dense = problems.get(p).dense_analyses
        # The results table as a reader sees it: its examples-to-target cell recomputed from the per-seed list.
        table = page.split(f"{problems.get(p).label}: Results</h2>", 1)[1].split("</table>", 1)[0]
        cells = {row[0]: row[5] for row in (re.findall(r"<td>(.*?)</td>", r) for r in table.split("<tr>")[2:])}
        for o in params.study.optimizers:
            hits = [x for x in summary["optimizers"][o]["tuned_examples_reached"] if x is not None]
            assert cells[optimizers.get(o).label] == (f"{np.median(hits):.0f} ({len(hits)}/{seeds} seeds)" if hits
                                                      else f"never (0/{seeds})")
        assert list(summary["optimizers"]) == params.study.optimizers
        for o in params.study.optimizers:
            names = optimizers.get(o).hyperparams
            rows = read_csv(root / f"studies/{p}/{o}/constant/trials.csv")
            assert len(rows) == params.study.n_trials and all(rows[0][h] for h in names)
            best = json.loads((root / f"studies/{p}/{o}/constant/best.json").read_text())
            assert set(best["hyperparams"]) == set(names) and np.isfinite(best["value"]) and best["problem"] == p
            s = summary["optimizers"][o]
            assert s["regret"] >= 0 and s["effective_lr_ratio"] and len(s["tuned_examples_reached"]) == params.evaluate.seeds
            hits = [x for x in s["tuned_examples_reached"] if x is not None]
            assert s["tuned_examples_to_target"] == {"median": float(np.median(hits)) if hits else None,
                                                     "seeds_reached": len(hits), "seeds": params.evaluate.seeds}
            if not dense:
                assert s["grid_points"] is None and s["samplers"] is None and s["best_known"]["source"] == "study"
                continue
            assert s["grid_points"] == landscape.grid_side(len(names), params.evaluate) ** len(names)
            assert set(s["grid_optimum_hyperparams"]) == set(names)  # regret is against the best known
            assert s["best_known"]["value"] <= min(s["grid_optimum"], s["study_best"])
            assert (s["keras_max_abs_diff"] is None) == (optimizers.get(o).keras is None)
            assert set(s["samplers"]) == {"tpe", "random", "qmc", "cmaes"} and s["random_search"]["expected_best_at_budget"]
        if summary["floor_kind"] == "best_known":  # its target is the best tuned optimizer's median final loss
            assert max(summary["optimizers"][o]["tuned_examples_to_target"]["seeds_reached"]
                       for o in params.study.optimizers) >= params.evaluate.seeds / 2
        pairs = summary["comparisons"]["pairs"]
        assert len(pairs) == n * (n - 1) // 2 and sum(summary["comparisons"]["probability_best"].values()) == pytest.approx(1)
        assert set(summary["comparisons"]["tuned_vs_book"]) == set(params.study.optimizers)
        out = root / "reports/evaluation" / p
        if dense:
            samplers_csv = read_csv(out / "samplers.csv")
            assert len(samplers_csv) == n * 4 * params.evaluate.sampler_repeats * params.study.n_trials
            assert min(float(r["regret"]) for r in samplers_csv) >= 0  # no sampler beats the best known value
            assert {r["optimizer"] for r in read_csv(out / "landscape.csv")} == set(params.study.optimizers)
        for name in ("convergence", "effective_lr"):  # the DVC plots' files: one column per optimizer
            assert list(read_csv(out.parent / name / f"{p}.csv")[0]) == ["examples", *params.study.optimizers]
    across = everything["across"]
    assert set(across["excess"]) == set(params.study.problems)
    for o, prof in across["performance_profile"]["optimizers"].items():
        assert 0 <= prof["area"] <= 1 and prof["runs"] == len(params.study.problems) * params.evaluate.seeds
    for name in captions:
        assert f"<figure id='{name}'><img" in page and (root / f"reports/figures/{name}.png").stat().st_size > 10_000
    assert (root / "reports/report.pdf").stat().st_size > 50_000
    return everything


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_runs_through_every_stage(scenario, raw_file, tmp_path):
    edits = merged(TINY, SCENARIOS[scenario])
    raw = json.loads(json.dumps(merged(DEFAULTS, edits)).replace("{root}", str(tmp_path)))
    params = config.parse_params(raw)
    prepare.prepare(raw_file, tmp_path / "prepared", params.data.n_rows, params.data.sha1)
    dataset = data.load_prepared(tmp_path / "prepared")
    summary, captions = run_pipeline(params, dataset, tmp_path)
    summary = check_complete_and_finite(params, tmp_path, captions)["problems"]["linreg"]
    assert dataset.stats["rows"] == params.data.n_rows
    if scenario == "evaluation and divergence":
        book = summary["optimizers"]["sgd"]["book_final_loss"]
        assert book["diverged_seeds"] == 3 and book["seeds"] == 3  # each scores its initial loss
        assert book["mean"] > summary["optimizers"]["sgd"]["tuned_final_loss"]["mean"]
        t = summary["comparisons"]["tuned_vs_book"]["sgd"]
        assert t["seeds"] == 3 and t["estimate"] < 0  # every seed still counts, as the bad run it was
        assert "(all 3 seeds diverged)" in (tmp_path / "reports/report.html").read_text()
        assert summary["seeds"] == [50, 51, 52]
    if scenario == "schedules":
        check_schedules(params, dataset, tmp_path)
    if scenario == "protocol and scales":
        import optuna
        assert len(optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/studies.db")) == 3 * 2  # x problems
        assert list(map(int, summary_examples(tmp_path))) == [700, 994]  # 142 batches of 7 (6 rows sit out), record every 100
        mlp = json.loads((tmp_path / "reports/summary.json").read_text())["problems"]["mlp"]
        assert mlp["protocol"] == {"batch_size": 25, "epochs": 3, "record_every": 500, "steps": 120}  # 40 steps x 3
        check_each_problem_alone(params, dataset, tmp_path)


def check_each_problem_alone(params: config.Params, dataset: data.Dataset, root) -> None:
    """evaluate runs the problems side by side (threads): each problem evaluated on its own gives
    the same summary and the same CSVs, byte for byte."""
    together = json.loads((root / "reports/summary.json").read_text())["problems"]
    assert len(together) == 2
    for p in params.study.problems:
        alone = dataclasses.replace(params, study=dataclasses.replace(params.study, problems=[p]))
        out = root / f"alone-{p}"
        evaluate.evaluate(dataset, alone, root / "studies", out / "evaluation", out / "summary.json")
        assert json.loads((out / "summary.json").read_text())["problems"][p] == together[p]
        for csv_file in sorted((root / "reports/evaluation" / p).glob("*.csv")):
            assert (out / "evaluation" / p / csv_file.name).read_bytes() == csv_file.read_bytes(), csv_file.name


def check_schedules(params: config.Params, dataset: data.Dataset, root) -> None:
    """Each schedule's study searched its settings (warmup fixed at 0.1), and the evaluation's test of
    tuned schedule against tuned constant is the Hodges-Lehmann median of Walsh averages, recomputed
    here from fresh engine runs of the two winners."""
    from pipeline.core import engine

    everything = json.loads((root / "reports/summary.json").read_text())["problems"]
    page = (root / "reports/report.html").read_text()
    assert "Learning-rate schedules" in page and "cosine with warmup" in page and "multi-factor" in page
    for p in params.study.problems:
        protocol = config.protocol(params, p)
        seeds = np.arange(params.evaluate.first_seed, params.evaluate.first_seed + params.evaluate.seeds)
        for o in params.study.optimizers:
            constant = json.loads((root / f"studies/{p}/{o}/constant/best.json").read_text())["hyperparams"]
            base = engine.train(dataset, o, constant, seeds, protocol, p).scored()
            for schedule, reads in (("warmup_cosine", {"final", "warmup"}), ("multifactor", {"drop"})):
                rows = read_csv(root / f"studies/{p}/{o}/{schedule}/trials.csv")
                assert reads <= set(rows[0]) and {r.get("warmup", "0.1") for r in rows} == {"0.1"}
                best = json.loads((root / f"studies/{p}/{o}/{schedule}/best.json").read_text())
                assert set(best["hyperparams"]) == set(optimizers.get(o).hyperparams) | reads
                diff = engine.train(dataset, o, best["hyperparams"], seeds, protocol, p, schedule).scored() - base
                walsh = [(diff[i] + diff[j]) / 2 for i in range(len(diff)) for j in range(i, len(diff))]
                test = everything[p]["schedules"]["studies"][o][schedule]["test"]
                assert test["estimate"] == pytest.approx(np.median(walsh), rel=1e-9, abs=1e-15)
                assert test["family_size"] == 4 and test["verdict"] in ("better", "worse", "equivalent", "inconclusive")


def summary_examples(root):
    return [r["examples"] for r in read_csv(root / "reports/evaluation/convergence/linreg.csv")]


def test_a_new_optimizer_registered_in_one_place_runs_through_every_stage(raw_file, tmp_path, monkeypatch):
    """The README's "Adding an optimizer": sign-SGD, one entry in the registry and its two settings in
    params.yaml (its lr's range is lr's, already there)."""
    sign = pieces.Transform((), lambda params: (), lambda u, state, h: (pieces.tf.sign(u), state))
    monkeypatch.setitem(optimizers.OPTIMIZERS, "signsgd", optimizers.build(
        "signsgd", "signSGD", pieces.chain(sign, pieces.scale_by_learning_rate())))
    raw = merged(DEFAULTS, merged(TINY, {"study": {"optimizers": ["signsgd", "sgd"]},
                                         "book": {"signsgd": {"lr": 0.01}},
                                         "evaluate": {"quadratic": {"signsgd": {"lr": 0.2}}}}))
    params = config.parse_params(raw)
    prepare.prepare(raw_file, tmp_path / "prepared", params.data.n_rows, params.data.sha1)
    summary, captions = run_pipeline(params, data.load_prepared(tmp_path / "prepared"), tmp_path)
    check_complete_and_finite(params, tmp_path, captions)
    for p in params.study.problems:
        assert summary["problems"][p]["optimizers"]["signsgd"]["book_hyperparams"] == {"lr": 0.01}
    assert "signSGD" in (tmp_path / "reports/report.html").read_text()


def test_a_new_problem_registered_in_one_place_runs_through_every_stage(raw_file, tmp_path, monkeypatch):
    """The README's "Adding a problem": a classifier on scikit-learn's bundled wine data (178 samples,
    13 features, 3 classes), one entry in the registry and its protocol in params.yaml."""
    from pipeline.core.classifier import Classifier
    monkeypatch.setitem(problems.PROBLEMS, "wine", Classifier(
        "wine", "tanh classifier 13-16-16-3 on wine", "two tanh layers of 16 on scikit-learn's wine data",
        floor="best_known", dense_analyses=False, convex=False, hidden=(16, 16), activation="tanh", source="wine"))
    raw = merged(DEFAULTS, merged(TINY, {"study": {"problems": ["linreg", "wine"], "optimizers": ["adagrad", "rmsprop"]},
                                         "protocols": {"wine": {"batch_size": 16, "epochs": 20, "record_every": 133}}}))
    params = config.parse_params(raw)
    prepare.prepare(raw_file, tmp_path / "prepared", params.data.n_rows, params.data.sha1)
    dataset = data.load_prepared(tmp_path / "prepared")
    summary, captions = run_pipeline(params, dataset, tmp_path)
    check_complete_and_finite(params, tmp_path, captions)
    wine = summary["problems"]["wine"]
    assert wine["protocol"] == {"batch_size": 16, "epochs": 20, "record_every": 133, "steps": 180}  # 133 of 178 train
    assert set(wine["optimizers"]["adagrad"]["effective_lr_ratio"]) == {"layer1", "layer2", "layer3"}
    assert 0.5 < wine["optimizers"]["rmsprop"]["tuned_held_out_accuracy"]["mean"] <= 1  # above chance (1/3)
    assert "adagrad_vs_rmsprop" in wine and "wine_effective_lr" in captions
    page = (tmp_path / "reports/report.html").read_text()
    assert "tanh classifier 13-16-16-3 on wine: Results" in page and "The chapter&#39;s claim" in page


def test_study_workers_setting_never_forks_beyond_it(raw_file, tmp_path):
    """study.workers: 3 in params.yaml, through the real command: exactly 3 study processes (the
    command and 2 helpers, each with its MLflow process) and exactly n_trials counted."""
    root = prepared_project(tmp_path / "project", raw_file, lambda raw: raw["study"].update(
        workers=3, n_trials=24, seeds_per_trial=2))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "study", "sgd"], cwd=root, env=run_env(CI="true"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    most, deadline, seen = 0, time.time() + 300, set()
    while proc.poll() is None:
        # Counted once seen in two scans in a row: a process caught between fork and exec (as it
        # starts MLflow's process) shows its parent's command line for a moment, a helper for seconds.
        now = set(study_processes(proc.pid))
        most, seen = max(most, len(now & seen)), now
        if most > 3 or time.time() > deadline:  # forking without end: stop the whole tree, then fail
            os.killpg(proc.pid, 9)
            pytest.fail(f"{most} study processes at once")
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert most == 3, most  # the command and its 2 helpers; none of them started more
    metrics = json.loads((root / "studies/linreg/sgd/constant/metrics.json").read_text())
    assert metrics["trials"] == 24 and len(read_csv(root / "studies/linreg/sgd/constant/trials.csv")) == 24
    assert "run by this worker" in out


def study_processes(root: int) -> list:
    """`python -m pipeline study ...` processes in the tree of process `root` (root included)."""
    parent, command = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent[int(pid)] = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
            command[int(pid)] = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue

    def in_tree(pid):
        while pid and pid != root:
            pid = parent.get(pid, 0)
        return pid == root

    return [pid for pid, cmd in command.items() if cmd[1:3] == [b"-m", b"pipeline"] and b"study" in cmd and in_tree(pid)]


@pytest.mark.parametrize("url", [
    "postgresql://bob@127.0.0.1:1/optuna?password=s3cretPW",
    "postgresql://bob:s3cretPW@127.0.0.1:1/optuna",
    "postgresql://bob:s3c%40retPW@127.0.0.1:1/optuna",
    "postgresql:///optuna?host=127.0.0.1&port=1&user=bob&password=s3cretPW",
    "postgresql+psycopg://bob@127.0.0.1:1/optuna?sslmode=disable&password=s3cretPW",
])
def test_storage_password_in_any_form_never_shows(url, raw_file, tmp_path):
    root = prepared_project(tmp_path / "project", raw_file)
    result = cli("study", "sgd", cwd=root, OPTUNA_STORAGE=url)
    assert result.returncode == 1 and "not usable" in result.stderr, result.stderr[-2000:]
    assert "s3cret" not in result.stderr + result.stdout and "retPW" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "***" in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["train", "--optimizer", "adam", "--lr", "0.02", "--beta1", "0.8", "--beta2", "0.99", "--json"],
     {"lr": 0.02, "beta1": 0.8, "beta2": 0.99}),
    (["train", "--optimizer", "adadelta", "--rho", "0.8", "--json"], {"rho": 0.8}),
    (["train", "--optimizer", "yogi", "--json"], {"lr": 0.01, "beta1": 0.9, "beta2": 0.999}),
    (["train", "--optimizer", "momentum", "--lr", "0.004", "--beta", "0.8", "--json"], {"lr": 0.004, "beta": 0.8}),
])
def test_train_takes_a_flag_per_hyperparameter_with_book_defaults(args, expected, raw_file, tmp_path):
    root = prepared_project(tmp_path / "project", raw_file)
    result = cli(*args, cwd=root)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["hyperparameters"] == expected and 0.240 < out["final_loss"] < 0.255


def test_train_on_the_network_prints_what_recomputes_the_run(raw_file, tmp_path):
    """`train --problem mlp --json`: the architecture, the protocol, and the initial parameters layer by
    layer; from them (and the seed's batches) a float64 NumPy forward pass gives the printed start."""
    from pipeline.core import network
    root = prepared_project(tmp_path / "project", raw_file)
    result = cli("train", "--problem", "mlp", "--optimizer", "rmsprop", "--seed", "3", "--epochs", "1", "--json", cwd=root)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["problem"] == "mlp" and out["architecture"]["layers"] == [5, 64, 64, 1]
    assert out["architecture"]["activation"] == "tanh" and out["protocol"]["epochs"] == 1
    layers = out["initial_parameters"]
    assert [np.shape(layer["weights"]) for layer in layers] == [(5, 64), (64, 64), (64, 1)]
    flat = np.concatenate([np.concatenate([np.ravel(layer["weights"]), layer["bias"]]) for layer in layers])
    np.testing.assert_array_equal(flat.astype(np.float32), network.initial_params(3, (5, 64, 64, 1)))
    assert len(out["losses"]) == 1 and len(out["effective_lr"][0]) == len(out["effective_lr_columns"]) == 9
    dataset = data.load_prepared(root / "data/prepared")
    start = network.numpy_loss(dataset.features, dataset.target, flat[None], (5, 64, 64, 1), "tanh")[0]
    assert out["losses"][0] < start  # it trained from that start
    plain = json.loads(cli("train", "--optimizer", "rmsprop", "--json", cwd=root).stdout)  # --problem defaults to linreg
    assert plain["problem"] == "linreg" and plain["architecture"]["layers"] == [5, 1] and 0.240 < plain["final_loss"] < 0.255
    linreg = problems.get("linreg")
    assert linreg.initial_layers(linreg.initial_params(0, 5, config.load_params(root / "params.yaml").train), 5)[0]["bias"] == [0.0]
    refused = cli("train", "--problem", "mlp", "--optimizer", "sgd", "--init", "zeros", cwd=root)  # not silently ignored
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "--init applies to the linear model only" in refused.stderr and "drop --init" in refused.stderr


def test_quadratic_takes_every_flag_and_foreign_flags_are_refused(raw_file, tmp_path):
    from pipeline.core import quadratic
    root = prepared_project(tmp_path / "project", raw_file)
    for name in optimizers.OPTIMIZERS:
        setting = {h: v * 0.9 for h, v in PARAMS.evaluate.quadratic[name].items()}
        flags = [x for h, v in setting.items() for x in (f"--{h}", repr(v))]
        result = cli("quadratic", "--optimizer", name, *flags, "--steps", "7", cwd=root)
        assert result.stdout.strip() == quadratic.book_line(quadratic.trace(name, setting, 7)), result.stderr
    refused = cli("train", "--optimizer", "adadelta", "--lr", "0.1", cwd=root)
    assert refused.returncode == 1 and refused.stderr.strip() == \
        "error: --lr does not apply to adadelta: its hyperparameters are --rho"
