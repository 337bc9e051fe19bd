"""Evaluation and report: the numbers behind them, and the whole pipeline through `dvc repro`."""
import csv
import html
import itertools
import json
import subprocess

import numpy as np
import optuna
import pytest
import yaml
from mlflow import MlflowClient
from pypdf import PdfReader

from pipeline.core import config
from pipeline.stages import report
from pipeline.stages.evaluate import landscape, problem as evaluation
from pipeline.stages.study import storage, trials as study
from conftest import run_env


def test_expected_best_is_the_mean_over_all_subsets():
    values = np.array([0.31, 0.25, 0.5, 0.27, 0.26, 0.4])  # 0.5: a diverged trial, scoring its initial loss
    rows = landscape.budget_curve(values, optimum=0.2)
    for b, row in enumerate(rows, start=1):
        assert row["subsample_expected_best"] == pytest.approx(np.mean([min(s) for s in itertools.combinations(values, b)]))
        assert row["best_so_far"] == min(values[:b]) and row["regret"] == pytest.approx(row["best_so_far"] - 0.2)


def test_expected_best_holds_past_a_thousand_trials():
    """1100 trials (binomials as floats overflowed from 1030 on): against exact rational arithmetic."""
    from fractions import Fraction
    from math import comb
    rng = np.random.default_rng(0)
    values = rng.uniform(0.24, 0.4, 1100)
    values[rng.choice(1100, 50, replace=False)] = 0.5  # diverged trials score their initial loss
    rows = landscape.budget_curve(values, optimum=0.24)
    ordered = sorted(values)
    n = len(ordered)
    for b in (1, 2, 37, 500, 1029, 1030, 1100):
        exact = sum(Fraction(comb(n - i, b - 1), comb(n, b)) * Fraction(v) for i, v in enumerate(ordered, start=1))
        assert rows[b - 1]["subsample_expected_best"] == pytest.approx(float(exact), rel=1e-12)


def test_mean_ci_scores_diverged_seeds_by_the_rule_and_counts_them():
    from scipy import stats
    values, start = np.array([0.25, np.nan, 0.26, 0.24, np.inf]), np.array([0.5, 0.51, 0.49, 0.5, 0.52])
    got = evaluation.mean_ci(values, start)
    scored = np.array([0.25, 0.51, 0.26, 0.24, 0.52])
    assert got["diverged_seeds"] == 2 and got["seeds"] == 5 and got["mean"] == pytest.approx(scored.mean())
    low, high = stats.t.interval(0.95, len(scored) - 1, loc=scored.mean(), scale=stats.sem(scored))
    assert got["ci95"] == pytest.approx((high - low) / 2)
    every = evaluation.mean_ci(np.array([np.nan, np.nan]), np.array([0.5, 0.5]))
    assert every == {"mean": 0.5, "ci95": 0.0, "diverged_seeds": 2, "seeds": 2}


def test_examples_to_floor_and_grid(dataset, params):
    from pipeline.core import engine
    result = engine.train(dataset, "rmsprop", {"lr": 0.01, "gamma": 0.9}, [0, 1], params.train, "linreg")
    floor = dataset.stats["least_squares"]["loss"]
    reached = evaluation.examples_to_floor(result, floor, 0.01)
    for losses, x in zip(result.losses, reached):
        first = np.argmax(losses <= 1.01 * floor)
        assert x == result.examples[first] and (losses[:first] > 1.01 * floor).all()
    assert evaluation.examples_to_floor(result, floor, 0.0) == [None, None]  # nobody reaches the floor itself
    g = landscape.grid(params.study.search_space["gamma"], 4)
    assert g[0] == pytest.approx(0.5) and g[-1] == pytest.approx(0.999)
    assert np.allclose(np.diff(np.log(1 - g)), np.log(1 - g[1]) - np.log(1 - g[0]))  # even in log(1 - gamma)


def dvc(root, *args, **env):
    return subprocess.run(["dvc", *args], cwd=root, env=run_env(CI="true", **env), capture_output=True, text=True,
                          timeout=900)


def small_pipeline(project_copy) -> dict:
    """Small params for a whole `dvc repro` in a test: 6 trials per study, 3 evaluation seeds."""
    raw = yaml.safe_load((project_copy / "params.yaml").read_text())
    raw["study"].update(n_trials=6, seeds_per_trial=2)
    raw["evaluate"].update(seeds=3, framework_seeds=1, lr_points=8, grid_points=6, cube_points=4, sampler_repeats=2,
                           random_draws=64, refine_points=3)
    (project_copy / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return raw


LABELS = {"linreg": "linear regression (convex)", "mlp": "tanh network 5-64-64-1 (non-convex)",
          "quadratic_deep": "DeepOBS quadratic_deep (convex, 100-D)",
          "digits": "tanh classifier 64-64-64-10 on digits (non-convex)"}


def expected_sections_and_figures(problems: list) -> tuple:
    """What the report promises, written here and not read from the report's code: per problem its
    sections (Keras only where the dense analyses run, linreg) and figures, then the shared ones."""
    sections, figures = ["Key findings", "1. Setup"], []
    for p in problems:
        own = ["Results", "Convergence", "Effective learning rate", "The search", "Comparisons"]
        own += ["From scratch vs Keras"] if p == "linreg" else []
        sections += [f"{LABELS[p]}: {name}" for name in own]
        figures += [f"{p}_{name}" for name in ("convergence", "excess_loss", "effective_lr", "decay_weights")]
        figures += [f"{p}_quadratic"] if p == "linreg" else []
        figures += [f"{p}_optimization_history"]
        figures += [f"{p}_{name}" for name in ("landscape", "sensitivity", "tunability", "samplers",
                                                "scratch_vs_keras")] if p == "linreg" else []
    sections += ["Across problems", "Learning-rate schedules"]
    sections = sections[:2] + [f"{i}. {name}" for i, name in enumerate(sections[2:], start=2)]
    figures += ["performance_profile", "book_schedules", *(f"{p}_schedules" for p in problems)]
    return sections, figures


def check_report(root, n_trials=6) -> str:
    """Both reports have every section and figure, the PDF has each problem's results table; the text."""
    reports = root / "reports"
    summary = json.loads((reports / "summary.json").read_text())
    params = config.load_params(root / "params.yaml")
    r = report.Report(params, reports / "evaluation", reports / "summary.json", root / "studies",
                      json.loads((root / "data/prepared/stats.json").read_text()))

    page = (reports / "report.html").read_text()
    sections, figures = expected_sections_and_figures(list(summary["problems"]))
    assert report.section_titles(r) == sections and report.figure_names(r) == figures
    for section in sections:
        assert f"<h2>{html.escape(section)}</h2>" in page
    for name in figures:
        assert f"<figure id='{name}'><img alt='{name}' src='data:image/png;base64," in page
        assert (reports / "figures" / f"{name}.png").stat().st_size > 10_000
    assert "src='http" not in page and "<link" not in page and "<script" not in page  # opens offline

    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(reports / "report.pdf").pages)  # a cell may wrap
    for section in sections:
        assert section in text
    for problem, result in summary["problems"].items():
        for o in ("sgd", "adagrad", "rmsprop"):
            s = result["optimizers"][o]
            assert f"{s['tuned_final_loss']['mean']:.5f} +/- {s['tuned_final_loss']['ci95']:.5f}" in text
            assert f"{s['book_final_loss']['mean']:.5f}" in text
            assert s["trials"] == n_trials and (s["keras_max_abs_diff"] is None) == (problem != "linreg")
            if problem == "linreg":
                assert s["keras_max_abs_diff"] < 1e-5
    return page + text


def test_dvc_repro_runs_every_stage_then_reruns_only_what_changed(project_copy):
    raw = small_pipeline(project_copy)
    first = dvc(project_copy, "repro")
    assert first.returncode == 0, first.stderr[-3000:]
    check_report(project_copy)

    # The studies: each storage holds 6 counted trials (Optuna's API and command line), MLflow one
    # parent run per study with one child run per trial, and DVC sees their metrics.
    client = MlflowClient(f"sqlite:///{project_copy}/mlflow.db")
    exp = client.get_experiment_by_name("airfoil-optimizers").experiment_id
    records = {"linreg": range(200, 3001, 200), "mlp": range(1500, 15001, 1500),  # every 200; once an epoch of 1,500
               "quadratic_deep": range(896, 89601, 896), "digits": range(1347, 8083, 1347)}  # 7 x 128; 1,347 images
    for problem, name in itertools.product(records, ("sgd", "adagrad", "rmsprop")):
        assert len(list(csv.DictReader(open(project_copy / f"studies/{problem}/{name}/constant/trials.csv")))) == 6
        journal = storage.open_storage("journal", config.load_params(project_copy / "params.yaml").study,
                                       project_copy / "studies")
        [summary] = [s for s in optuna.get_all_study_summaries(journal)
                     if s.study_name.startswith(f"{problem}-{name}-")]
        trials = optuna.load_study(study_name=summary.study_name, storage=journal).trials
        assert sum(study.is_counted(t) for t in trials) == 6
        listed = subprocess.run(["optuna", "studies", "--storage", "studies/optuna.journal",
                                 "--storage-class", "JournalFileBackend", "-f", "json"],
                                cwd=project_copy, capture_output=True, text=True, check=True)
        listed = {s["name"]: s["n_trials"] for s in json.loads(listed.stdout)}
        assert listed[summary.study_name] == len(trials)
        [parent] = client.search_runs([exp], f"tags.study_name = '{summary.study_name}' and tags.run_type = 'study'")
        assert parent.info.run_name == f"{problem} · {name} · 6 trials · lr 0.0001..1" + (
            ", gamma 0.5..0.999" if name == "rmsprop" else "")
        assert f"Best: trial {parent.data.tags['best_trial']}," in parent.data.tags["mlflow.note.content"]
        assert parent.data.tags["mlflow.source.git.commit"] == parent.data.tags["git_commit"] != "unknown"
        trials_exp = client.get_experiment_by_name(f"airfoil-optimizers · {problem} · {name} trials").experiment_id
        children = client.search_runs([trials_exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert sorted(int(r.data.tags["trial_number"]) for r in children) == [t.number for t in trials]
        assert {"lr", "problem", "optimizer", "seeds", "batch_size", "epochs", "trial_number"} <= set(children[0].data.params)
        assert [m.step for m in client.get_metric_history(children[0].info.run_id, "loss")] == list(records[problem])
    shown = dvc(project_copy, "metrics", "show", "--json")
    assert shown.returncode == 0 and "best_value" in shown.stdout and "tuned_final_loss" in shown.stdout
    [run] = client.search_runs([exp], "tags.run_type = 'report'")
    assert {"report.html", "report.pdf", "summary.json", "figures"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    again = dvc(project_copy, "repro")
    assert again.returncode == 0 and "Running stage" not in again.stdout

    raw["evaluate"]["seeds"] = 4
    (project_copy / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    second = dvc(project_copy, "repro")
    assert second.returncode == 0, second.stderr[-3000:]
    ran = [line for line in second.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'evaluate':", "Running stage 'report':"]
    assert json.loads((project_copy / "reports/summary.json").read_text())["problems"]["mlp"]["seeds"] == \
        [1000, 1001, 1002, 1003]

    # An experiment on the network alone that adds an optimizer: only its one new study runs, then
    # evaluate and report, and the DVC plots follow study.optimizers.
    subprocess.run(["git", "add", "-A"], cwd=project_copy, check=True, capture_output=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "small"], cwd=project_copy,
                   check=True, capture_output=True)
    third = dvc(project_copy, "exp", "run", "-S", "study.optimizers=[sgd,adagrad,rmsprop,adam]",
                "-S", "study.problems=[mlp]")
    assert third.returncode == 0, third.stderr[-3000:]
    ran = [line for line in third.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'study@mlp-adam-constant':", "Running stage 'evaluate':", "Running stage 'report':"], ran
    summary = json.loads((project_copy / "reports/summary.json").read_text())
    assert list(summary["problems"]) == ["mlp"] and list(summary["problems"]["mlp"]["optimizers"]) == \
        ["sgd", "adagrad", "rmsprop", "adam"]
    plots = dvc(project_copy, "plots", "show", "--json")
    assert plots.returncode == 0 and not json.loads(plots.stdout).get("errors")
    assert set(json.loads(plots.stdout)["data"]) == {"reports/evaluation/convergence/mlp.csv",
                                                     "reports/evaluation/effective_lr/mlp.csv"}  # a plot per problem run
    series = {row.get("field") for plot in json.loads(plots.stdout)["data"].values()
              for part in plot if part["type"] == "vega" for row in part["content"]["data"]["values"]}
    assert {"sgd", "adagrad", "rmsprop", "adam"} <= series

    # Schedules as a dimension: adding cosine (SGD alone now) runs its one new study, then evaluate and
    # report; its runs and trials experiment carry the schedule, and the evaluation tests it against constant.
    fourth = dvc(project_copy, "exp", "run", "-S", "study.schedules=[constant,cosine]", "-S", "study.optimizers=[sgd]")
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    ran = [line for line in fourth.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'study@mlp-sgd-cosine':", "Running stage 'evaluate':", "Running stage 'report':"], ran
    cosine = json.loads((project_copy / "reports/summary.json").read_text())["problems"]["mlp"]["schedules"]
    assert set(cosine["studies"]["sgd"]["cosine"]["hyperparams"]) == {"lr", "final"}
    assert cosine["studies"]["sgd"]["cosine"]["test"]["seeds"] == 4 and cosine["demo"]["schedule"] == "cosine"
    trials_exp = client.get_experiment_by_name("airfoil-optimizers · mlp · sgd · cosine trials").experiment_id
    runs = client.search_runs([trials_exp])
    assert len(runs) == 6 and {r.data.params["schedule"] for r in runs} == {"cosine"} and "final" in runs[0].data.params
    assert "<td>tuned SGD</td><td>cosine (final " in (project_copy / "reports/report.html").read_text()


def test_one_section_model_renders_escaped_html_and_a_pdf_that_flows_onto_pages(tmp_path):
    """Both renderers read the same sections: Jinja2 escapes every value; the PDF computes where
    text goes, so 150 bullets flow onto as many pages as they need instead of running off one."""
    import matplotlib.pyplot as plt
    import pypdf

    from pipeline.stages.report import document

    def figure():
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        return fig, "a caption <b>bold?</b>"

    bullets = ["Adam <script>alert(1)</script> & co", *[f"finding {i}" for i in range(150)]]
    model = [document.Section("Key findings", bullets=bullets, list_id="key-findings"),
             document.Section("2. Results", tables=[document.Table("t", ["a", "b"], [["1", "<2>"]])],
                              figures=[document.Figure("f", figure)])]
    page = document.html("T <i>", model, {"2. Results": [("f", b"PNG", "a caption <b>bold?</b>")]})
    assert "<script>" not in page and "Adam &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "<title>T &lt;i&gt;</title>" in page and "<td>&lt;2&gt;</td>" in page
    assert "<figure id='f'><img alt='f' src='data:image/png;base64,UE5H'>" in page and "<ul id='key-findings'>" in page
    document.pdf(tmp_path / "r.pdf", "T", model)
    pages = [p.extract_text() for p in pypdf.PdfReader(tmp_path / "r.pdf").pages]
    text = "\n".join(pages[:-2])
    assert "Adam <script>alert(1)</script> & co" in pages[0] and len(pages) - 2 >= 3  # 152 lines: 3 or more pages
    assert all(text.count(f"- finding {i}\n") == 1 for i in range(149)) and text.endswith("- finding 149")
    assert "<2>" in pages[-2] and "a caption <b>bold?</b>" in pages[-1]  # the table's page, then the figure's
