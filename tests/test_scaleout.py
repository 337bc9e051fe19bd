"""Scale-out and crash safety on real servers: PostgreSQL for Optuna, `mlflow server` for MLflow,
real worker processes, real signals. Every check reads Optuna's and MLflow's own APIs."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from pipeline.core import config, data
from pipeline.stages.study import search, storage, trials as study
from conftest import assert_one_line_error, cli, prepared_project, read_csv, run_env
from servers import PASSWORD, free_port


def make_project(tmp_path, raw_file, n_trials, epochs=2, record_every=200, batch_size=10, seeds=2,
                 **study_changes) -> Path:
    experiment = f"scaleout-{uuid.uuid4().hex[:8]}"  # one tracking server serves every test

    def edit(raw):
        raw["study"].update(n_trials=n_trials, seeds_per_trial=seeds, **study_changes)
        raw["train"].update(epochs=epochs, record_every=record_every, batch_size=batch_size)
        raw["mlflow"]["experiment"] = experiment

    return prepared_project(tmp_path / "project", raw_file, edit)


def start_worker(root, optimizer, env, *args, log_name=None):
    log = open(root / (log_name or f"worker-{uuid.uuid4().hex[:6]}.log"), "w")
    return subprocess.Popen([sys.executable, "-m", "pipeline", "study", optimizer, *args], cwd=root, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def wait_all(procs, timeout=600):
    deadline = time.time() + timeout
    return [p.wait(max(1, deadline - time.time())) for p in procs]


def load_study(root, optimizer, url, problem="linreg"):
    params = config.for_problem(config.load_params(root / "params.yaml"), problem)
    name = search.study_name(optimizer, params, data.load_prepared(root / data.PREPARED_DIR))
    try:
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:  # not created yet
        return None


def running_trial_of(root, optimizer, url, pid):
    """A trial the worker `pid` is running now, once it has finished at least one."""
    s = load_study(root, optimizer, url)
    if s is None:
        return None
    trials = s.get_trials(deepcopy=False)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        return None
    return next((t.number for t in trials if t.state == TrialState.RUNNING and storage.owner(t)[1] == pid), None)


def open_transactions(url) -> int:
    """Sessions on this database (other than ours) inside a transaction or a statement."""
    import psycopg

    with psycopg.connect(url) as connection:
        return connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')").fetchone()[0]


def freeze_mid_trial(worker, root, optimizer, url, between_transactions=False) -> int:
    """SIGSTOP the worker while one of its trials is running (not between trials); the trial.
    between_transactions: only where it holds no transaction open, as a process that hangs in
    its own computation would (one hung inside a transaction is ended by PostgreSQL after grace_s)."""
    def caught():
        assert worker.poll() is None, "the worker finished before a trial could be caught running"
        return running_trial_of(root, optimizer, url, worker.pid)

    while True:
        victim = wait_for(caught)
        worker.send_signal(signal.SIGSTOP)
        running = load_study(root, optimizer, url).trials[victim].state == TrialState.RUNNING
        if running and not (between_transactions and open_transactions(url)):
            return victim
        worker.send_signal(signal.SIGCONT)


def wait_for(condition, timeout=300, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value is not None:
            return value
        time.sleep(step)
    raise AssertionError("timed out")


def mlflow_runs(server_url, root):
    """The study parent runs and child runs of this project's experiment, from MLflow's API."""
    client = MlflowClient(server_url)
    experiment = config.load_params(root / "params.yaml").mlflow.experiment
    ids = [e.experiment_id for e in client.search_experiments() if e.name.startswith(experiment)]
    runs = client.search_runs(ids, max_results=5000)
    return client, runs


def check_mirrored(runs, s):
    """One parent run for the study; every finished trial logged exactly once, with its status."""
    parents = [r for r in runs if r.data.tags.get("study_name") == s.study_name and r.data.tags["run_type"] == "study"]
    assert len(parents) == 1, [r.info.run_id for r in parents]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    per_trial = Counter(int(r.data.tags["trial_number"]) for r in children)
    finished = [t for t in s.get_trials() if t.state != TrialState.RUNNING]
    assert per_trial == Counter(t.number for t in finished)  # each exactly once, nothing else
    status = {int(r.data.tags["trial_number"]): r.info.status for r in children}
    for t in finished:
        expected = "FINISHED" if t.state == TrialState.COMPLETE else (
            "KILLED" if storage.fail_reason(t).startswith("interrupted") else "FAILED")
        assert status[t.number] == expected, (t.number, t.state, storage.fail_reason(t))
    return parents[0], status


def helpers_of(proc) -> list:
    """The helper workers a `study --workers N` process started: its children only, since a
    helper's own child caught between fork and exec shows the helper's command line for a moment."""
    try:
        return [p for p in psutil.Process(proc.pid).children() if p.cmdline()[-1:] == ["--worker"]]
    except psutil.Error:  # it (or a child) is exiting
        return []


def no_password_in_process_list() -> list:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if PASSWORD in cmdline:
                found.append(cmdline)
    return found


def test_workers_share_one_study_on_postgres_and_a_tracking_server(postgres, mlflow_server, raw_file, tmp_path):
    url = postgres.create_database("optuna_share")
    n = 30
    # epochs 40: trials long enough (~0.1 s) that the workers' start-ups overlap their work
    root = make_project(tmp_path, raw_file, n_trials=n, epochs=40, record_every=3000)
    env = run_env(OPTUNA_STORAGE=url, MLFLOW_TRACKING_URI=mlflow_server.url, CI="true")
    # Three workers on the network's RMSProp study started as on three machines, and one command
    # running three on the linear regression's SGD.
    procs = [start_worker(root, "rmsprop", env, "--problem", "mlp", log_name=f"rmsprop-{i}.log") for i in range(3)]
    procs.append(start_worker(root, "sgd", env, "--workers", "3", log_name="sgd.log"))
    helpers_seen, leaks = 0, []
    while any(p.poll() is None for p in procs):
        leaks += no_password_in_process_list()
        helpers_seen = max(helpers_seen, len(helpers_of(procs[-1])))
        time.sleep(0.5)
    assert wait_all(procs) == [0, 0, 0, 0], [(root / f).read_text()[-2000:] for f in ("rmsprop-0.log", "sgd.log")]
    assert leaks == []
    assert helpers_seen == 2  # --workers 3: this process and two helpers

    client, runs = mlflow_runs(mlflow_server.url, root)
    for problem, optimizer, n_workers in (("mlp", "rmsprop", 3), ("linreg", "sgd", 3)):
        s = load_study(root, optimizer, url, problem)
        counted = sorted((t for t in s.get_trials() if study.is_counted(t)), key=lambda t: t.number)
        numbers = [t.number for t in counted]
        assert len(counted) >= n and len(set(numbers)) == len(numbers)
        by_worker = Counter(t.user_attrs["worker"] for t in counted)
        assert 2 <= len(by_worker) <= n_workers, by_worker
        rows = read_csv(root / f"studies/{problem}/{optimizer}/constant/trials.csv")
        assert [int(r["number"]) for r in rows] == numbers[:n]  # the first n_trials by number
        metrics = json.loads((root / f"studies/{problem}/{optimizer}/constant/metrics.json").read_text())
        assert metrics["trials"] == n and metrics["extra_trials"] == len(counted) - n
        parent, _ = check_mirrored(runs, s)
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["storage"] == url.replace(PASSWORD, "***")

    # The password is nowhere: worker logs, MLflow params and tags, the stage outputs.
    for log in root.glob("*.log"):
        assert PASSWORD not in log.read_text()
    for run in runs:
        assert PASSWORD not in json.dumps([run.data.params, run.data.tags])
    for path in (root / "studies").rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text(errors="replace")


def on_postgres(postgres, mlflow_server, raw_file, tmp_path, **changes):
    """A project on PostgreSQL and the tracking server, heartbeats every second, a trial
    abandoned after three."""
    url = postgres.create_database(f"optuna_{uuid.uuid4().hex[:8]}")
    root = make_project(tmp_path, raw_file, heartbeat_s=1, grace_s=3, **changes)
    env = run_env(OPTUNA_STORAGE=url, MLFLOW_TRACKING_URI=mlflow_server.url, CI="true")
    return root, url, env


def test_worker_killed_mid_trial_loses_nothing(postgres, mlflow_server, raw_file, tmp_path):
    # epochs 120: trials of ~0.3 s, most of it RUNNING, so the test catches one mid-trial (at 40 epochs
    # the whole study could end between two polls of a loaded machine)
    root, url, env = on_postgres(postgres, mlflow_server, raw_file, tmp_path, n_trials=30, epochs=120, record_every=3000)
    worker = start_worker(root, "adagrad", env)
    victim = freeze_mid_trial(worker, root, "adagrad", url)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    s = load_study(root, "adagrad", url)
    assert s.trials[victim].state == TrialState.RUNNING  # killed with it, until someone notices
    before = {t.number: t.value for t in s.trials if study.is_counted(t)}

    rerun = start_worker(root, "adagrad", env)
    assert wait_all([rerun]) == [0]
    s = load_study(root, "adagrad", url)
    assert s.trials[victim].state == TrialState.FAIL
    assert storage.fail_reason(s.trials[victim]) == storage.WORKER_DIED
    counted = [t for t in s.trials if study.is_counted(t)]
    assert len(counted) == 30 and len({t.number for t in counted}) == 30
    assert all(t.value == before[t.number] for t in counted if t.number in before)  # kept, not redone
    _, runs = mlflow_runs(mlflow_server.url, root)
    parent, status = check_mirrored(runs, s)
    assert status[victim] == "KILLED" and parent.info.status == "FINISHED"


def test_hung_worker_is_failed_by_heartbeat_while_another_finishes(postgres, mlflow_server, raw_file, tmp_path):
    # 1000 epochs: trials spend most of their ~0.4 s training, outside any transaction; 24 trials
    # leave time to catch one there on a loaded machine (12 ran out once before one was caught)
    budget = 24
    root, url, env = on_postgres(postgres, mlflow_server, raw_file, tmp_path, n_trials=budget, epochs=1000,
                                 record_every=1_500_000, seeds=1)
    hung = start_worker(root, "rmsprop", env, log_name="hung.log")
    victim = freeze_mid_trial(hung, root, "rmsprop", url, between_transactions=True)
    try:
        other = start_worker(root, "rmsprop", env)
        assert wait_all([other]) == [0]
        s = load_study(root, "rmsprop", url)
        assert s.trials[victim].state == TrialState.FAIL
        assert storage.fail_reason(s.trials[victim]) == storage.NO_HEARTBEAT  # failed by Optuna's stale check
        assert sum(study.is_counted(t) for t in s.trials) == budget
        _, runs = mlflow_runs(mlflow_server.url, root)
        check_mirrored(runs, s)
    finally:
        hung.send_signal(signal.SIGCONT)
    # Woken up, the hung worker finds its trial taken over, logs nothing twice, and stops.
    assert wait_all([hung], timeout=300) == [0]
    woke = [line for line in (root / "hung.log").read_text().splitlines() if "unresponsive" in line]
    assert woke == [f"WARNING pipeline.stages.study.trials: trial {victim} was failed as abandoned while this "
                    f"worker was unresponsive"]  # said once, when it woke
    _, runs = mlflow_runs(mlflow_server.url, root)
    _, status = check_mirrored(runs, load_study(root, "rmsprop", url))
    assert status[victim] == "KILLED"


def test_ctrl_c_stops_every_worker_cleanly_and_the_rerun_completes(raw_file, tmp_path):
    root = make_project(tmp_path, raw_file, n_trials=5000)  # more than it can finish before the Ctrl-C
    env = run_env(CI="true")  # the default journal storage and SQLite store: one machine
    url = f"sqlite:///{root}/mlflow.db"
    journal = lambda: storage.open_storage("journal", config.load_params(root / "params.yaml").study,  # noqa: E731
                                           root / "studies")
    coordinator = start_worker(root, "sgd", env, "--workers", "2", log_name="first.log")

    def counted_by_two_workers():
        s = load_study(root, "sgd", journal())
        if s is None:
            return None
        workers = {t.user_attrs["worker"] for t in s.get_trials(deepcopy=False) if study.is_counted(t)}
        return True if len(workers) == 2 else None

    wait_for(counted_by_two_workers)
    tree = psutil.Process(coordinator.pid).children(recursive=True)  # its helper and both MLflow processes
    assert len(helpers_of(coordinator)) == 1 and len(tree) >= 3, [p.cmdline() for p in tree]
    coordinator.send_signal(signal.SIGINT)  # to the coordinator only: it passes it on to its helper
    assert wait_all([coordinator], timeout=120) == [130]
    _, alive = psutil.wait_procs(tree, timeout=60)
    assert alive == []  # none of its processes left behind
    s = load_study(root, "sgd", journal())
    before = {t.number: t.value for t in s.trials if study.is_counted(t)}
    assert all(t.state != TrialState.RUNNING for t in s.trials)  # told as failed, not left running
    check_mirrored(mlflow_runs(url, root)[1], s)

    # Resume with a budget four trials beyond what was done: n_trials is not part of the study's
    # identity, so this is the same study.
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["study"]["n_trials"] = len(before) + 4
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    rerun = start_worker(root, "sgd", env, "--workers", "2", log_name="rerun.log")
    assert wait_all([rerun]) == [0]
    s = load_study(root, "sgd", journal())
    counted = [t for t in s.trials if study.is_counted(t)]
    assert len(counted) >= len(before) + 4 and len({t.number for t in counted}) == len(counted)
    assert all(t.value == before[t.number] for t in counted if t.number in before)  # kept, not redone
    check_mirrored(mlflow_runs(url, root)[1], s)


@pytest.mark.parametrize("variable, template", [
    ("OPTUNA_STORAGE", "postgresql://alice:{secret}@127.0.0.1:{port}/optuna"),
    ("MLFLOW_TRACKING_URI", "http://alice:{secret}@127.0.0.1:{port}"),
])
def test_unreachable_storage_or_tracking_stops_before_any_work(variable, template, raw_file, tmp_path):
    root = prepared_project(tmp_path / "project", raw_file)
    secret = f"s3cret-{uuid.uuid4().hex[:6]}"
    url = template.format(secret=secret, port=free_port())  # nothing listens there
    result = cli("study", "sgd", cwd=root, **{variable: url})
    assert_one_line_error(result, url.replace(secret, "***"))
    assert secret not in result.stdout + result.stderr
    assert not (root / "studies").exists() and not (root / "mlflow.db").exists()


def test_scaled_out_studies_feed_dvc_repro_and_the_password_leaks_nowhere(postgres, mlflow_server, project_copy):
    """The README's "Scaling out": workers fill the shared storage, then `dvc repro` builds the
    report from it (the studies find their budget done)."""
    from test_report import check_report, dvc, small_pipeline

    raw = small_pipeline(project_copy)
    raw["mlflow"]["experiment"] = f"pipeline-{uuid.uuid4().hex[:8]}"
    raw["study"]["problems"] = ["linreg", "mlp"]  # the storage is the point here; test_report runs all four
    (project_copy / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shared = {"OPTUNA_STORAGE": postgres.create_database("optuna_pipeline"), "MLFLOW_TRACKING_URI": mlflow_server.url}
    assert dvc(project_copy, "repro", "prepare", **shared).returncode == 0
    workers = cli("study", "rmsprop", "--workers", "2", cwd=project_copy, CI="true", **shared)
    assert workers.returncode == 0, workers.stderr[-2000:]
    repro = dvc(project_copy, "repro", **shared)
    assert repro.returncode == 0, repro.stderr[-3000:]
    assert "6 of 6 trials already done" in repro.stderr  # RMSProp's study came from the workers
    report_text = check_report(project_copy)

    outputs = [workers.stdout, workers.stderr, repro.stdout, repro.stderr, report_text,
               (project_copy / "dvc.lock").read_text()]
    outputs += [p.read_text(errors="replace") for folder in ("studies", "reports") for p in (project_copy / folder).rglob("*")
                if p.is_file() and p.suffix in (".csv", ".json", ".html")]
    assert all(PASSWORD not in text for text in outputs)
    assert "postgresql://postgres:***@127.0.0.1" in json.dumps([r.data.tags for r in mlflow_runs(mlflow_server.url,
                                                                                                   project_copy)[1]])
    for run in mlflow_runs(mlflow_server.url, project_copy)[1]:
        assert PASSWORD not in json.dumps([run.data.params, run.data.tags])
