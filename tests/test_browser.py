"""The MLflow UI, optuna-dashboard and the HTML report as a person meets them, in Debian's
Chromium driven by Playwright, over a real `dvc repro` with tiny budgets. Screenshots go to
tests/artifacts/ (ignored by git) for a person to look at after a run."""
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from pipeline.core import processes
from conftest import ROOT, copy_project, run_env

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium); "
                                                          "under CI=true this fails")
OPTIMIZERS = ["sgd", "adagrad", "rmsprop"]
PROBLEMS = ["linreg", "quadratic_deep", "mlp", "digits"]  # params.yaml's default


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A real pipeline run with tiny budgets, in a fresh copy of the project."""
    dest = copy_project(tmp_path_factory.mktemp("browser") / "project", tests=False)
    raw = yaml.safe_load((dest / "params.yaml").read_text())
    raw["study"].update(n_trials=8, seeds_per_trial=2, optimizers=OPTIMIZERS)
    raw["evaluate"].update(seeds=3, framework_seeds=1, lr_points=8, grid_points=6, cube_points=4, sampler_repeats=2,
                           random_draws=64, refine_points=3)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    done = subprocess.run(["dvc", "repro"], cwd=dest, env=run_env(CI="true"), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return dest


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(cmd, cwd, url, timeout=120):
    """Start a server in a process group of its own and wait until `url` answers; end it with
    processes.end_group, which waits until the whole group is gone."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return proc
        except OSError:
            assert proc.poll() is None, f"{cmd[0]} exited with {proc.returncode}"
            time.sleep(0.5)
    processes.end_group(proc)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def open_page(browser, url, errors=None):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    if errors is not None:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return page


def test_mlflow_ui_shows_every_study_on_the_first_screen_and_a_drawn_trial_chart(project, browser):
    port = free_port()
    printed = subprocess.run([sys.executable, "-m", "pipeline", "ui", "--port", str(port), "--print-url"], cwd=project,
                             env=run_env(), capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    url = printed.stdout.strip().removeprefix("open ")  # the README's command prints the URL to open
    server = serve([sys.executable, "-m", "pipeline", "ui", "--port", str(port)], project, f"http://127.0.0.1:{port}/")
    try:
        page = open_page(browser, url)
        for p in PROBLEMS:  # every study, named by problem and optimizer with its budget, without "Load more"
            for o in OPTIMIZERS:
                page.get_by_text(f"{p} · {o} · 8 trials", exact=False).first.wait_for(timeout=60_000)
        assert page.get_by_text("report · linreg, quadratic_deep, mlp, digits · sgd, adagrad, rmsprop").count() == 1
        assert page.get_by_text("Load more").count() == 0
        page.screenshot(path=ARTIFACTS / "mlflow_studies.png", full_page=True)

        from mlflow import MlflowClient
        client = MlflowClient(f"sqlite:///{project}/mlflow.db")
        trials = client.get_experiment_by_name("airfoil-optimizers · mlp · rmsprop trials")
        run = client.search_runs([trials.experiment_id], max_results=1)[0]
        trial = open_page(browser, f"http://127.0.0.1:{port}/#/experiments/{trials.experiment_id}/runs/"
                                   f"{run.info.run_id}/model-metrics?workflowType=machine_learning")
        line = trial.locator("svg .scatterlayer path.js-line").first  # a drawn path, not a spinner
        line.wait_for(timeout=60_000)
        assert len(line.get_attribute("d") or "") > 20 and trial.get_by_text("loss", exact=True).count() >= 1
        trial.screenshot(path=ARTIFACTS / "mlflow_trial.png")
    finally:
        processes.end_group(server)
        server.wait(30)


def test_optuna_dashboard_lists_every_study_and_draws_its_history(project, browser):
    port = free_port()
    server = serve(["optuna-dashboard", "studies/optuna.journal", "--host", "127.0.0.1", "--port", str(port)],
                   project, f"http://127.0.0.1:{port}/api/studies")
    try:
        page = open_page(browser, f"http://127.0.0.1:{port}/dashboard")
        names = {}
        for p in PROBLEMS:  # each study named by its problem and optimizer
            for o in OPTIMIZERS:
                item = page.get_by_text(f"{p}-{o}-", exact=False).first
                item.wait_for(timeout=60_000)
                names[p, o] = item.inner_text()
        page.screenshot(path=ARTIFACTS / "optuna_dashboard.png", full_page=True)
        study = open_page(browser, f"http://127.0.0.1:{port}/dashboard/studies/2")
        study.get_by_text("final_loss").first.wait_for(timeout=60_000)  # the objective, named
        points = study.locator("svg .scatterlayer .point")
        points.first.wait_for(timeout=60_000)
        assert points.count() >= 8  # every trial of the history plot drawn
        study.screenshot(path=ARTIFACTS / "optuna_history.png", full_page=True)
    finally:
        processes.end_group(server)
        server.wait(30)


def test_html_report_from_disk_decodes_every_figure_without_console_errors(project, browser):
    errors = []
    page = open_page(browser, (project / "reports" / "report.html").as_uri(), errors)
    page.wait_for_load_state("load")
    from test_report import expected_sections_and_figures
    sections, figures = expected_sections_and_figures(PROBLEMS)
    assert page.evaluate("Array.from(document.querySelectorAll('figure')).map(f => f.id)") == figures
    assert page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)") == [
        *sections, "How to reproduce"]
    assert sorted(p.stem for p in (project / "reports" / "figures").glob("*.png")) == sorted(figures)
    widths = page.evaluate("Array.from(document.querySelectorAll('figure img')).map(i => i.complete && i.naturalWidth)")
    assert all(w and w > 100 for w in widths), widths
    assert page.locator("#key-findings li").count() >= 3
    assert errors == []
    page.screenshot(path=ARTIFACTS / "report.png", full_page=True)
