"""Studies end to end: real Optuna storages, a real MLflow SQLite store, real processes and signals."""
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from pipeline.core import config, tracking
from pipeline.stages import study as study_stage
from pipeline.stages.study import mirror, trials as study, outputs as study_outputs
from pipeline.stages.study import storage as storage_mod
from pipeline.core.errors import PipelineError
from conftest import ROOT, cli, experiment_ids, prepared_project, read_csv, run_env


@pytest.fixture
def params(params):
    """The committed params as the study stage runs them on linear regression (no default problem)."""
    return config.for_problem(params, "linreg")


def with_study(params, **changes):
    space = changes.pop("search_space", None)
    s = dataclasses.replace(params.study, **changes)
    if space:
        s = dataclasses.replace(s, search_space={**s.search_space, **space})
    return dataclasses.replace(params, study=s)


def run(optimizer, params, dataset, root, storage="journal", summary=False):
    """The study command's work, in-process: storage and MLflow under root."""
    with tracking.Tracker(f"sqlite:///{root}/mlflow.db", "test") as tracker:
        opened = storage_mod.open_storage(storage, params.study, root)
        result, sink, timings = study_stage.run_with(tracker, optimizer, params, dataset, opened, {"storage": storage})
        parent = sink.parent_id
        outcome = study_outputs.write_outputs(result, optimizer, params, root / optimizer, timings)
        if summary:
            study_outputs.log_study_summary(tracker, parent, result, optimizer, outcome, params)
    return result, MlflowClient(f"sqlite:///{root}/mlflow.db"), parent, outcome


def child_runs(client, parent):
    return client.search_runs(experiment_ids(client),
                              f"tags.`mlflow.parentRunId` = '{parent}'", max_results=1000)


def test_same_params_fresh_storage_same_trials_csv(params, dataset, tmp_path):
    p = with_study(params, n_trials=14, seeds_per_trial=2)
    run("rmsprop", p, dataset, tmp_path / "a")
    run("rmsprop", p, dataset, tmp_path / "b")
    first = (tmp_path / "a/rmsprop/trials.csv").read_bytes()
    assert first == (tmp_path / "b/rmsprop/trials.csv").read_bytes()
    rows = read_csv(tmp_path / "a/rmsprop/trials.csv")
    assert [int(r["number"]) for r in rows] == list(range(14))
    assert all(0.5 <= float(r["gamma"]) <= 0.999 and 1e-4 <= float(r["lr"]) <= 1 for r in rows)
    assert len({r["lr"] for r in rows}) == 14  # a real search, not one point repeated
    # A different sampler seed searches elsewhere.
    run("rmsprop", with_study(p, seed=1), dataset, tmp_path / "c")
    assert (tmp_path / "c/rmsprop/trials.csv").read_bytes() != first


def test_rerun_with_same_params_runs_nothing_and_more_trials_extend(params, dataset, tmp_path):
    p = with_study(params, n_trials=5, seeds_per_trial=1)
    result, *_ = run("adagrad", p, dataset, tmp_path)
    name = result.study_name
    again, _, _, outcome = run("adagrad", p, dataset, tmp_path)
    assert again.study_name == name and len(again.trials) == 5
    more, *_ = run("adagrad", with_study(p, n_trials=8), dataset, tmp_path)
    assert more.study_name == name and len(more.trials) == 8
    changed, *_ = run("adagrad", with_study(p, seeds_per_trial=2), dataset, tmp_path)
    assert changed.study_name != name and len(changed.trials) == 5


def test_trials_are_logged_to_mlflow_under_one_parent(params, dataset, tmp_path):
    p = with_study(params, n_trials=6, seeds_per_trial=3)
    result, client, parent, outcome = run("rmsprop", p, dataset, tmp_path, summary=True)
    exp = client.get_experiment_by_name("test").experiment_id
    parents = client.search_runs([exp], "tags.run_type = 'study'")
    assert [r.info.run_id for r in parents] == [parent]
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["best_value"] == pytest.approx(outcome.best.value)
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"optimization_history.png", "slice.png", "lr_gamma_contour.png"} <= artifacts
    children = child_runs(client, parent)
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == list(range(6))
    trials = {t.number: t for t in result.trials}
    for child in children:
        trial = trials[int(child.data.tags["trial_number"])]
        assert child.info.status == "FINISHED"
        assert float(child.data.params["lr"]) == pytest.approx(trial.user_attrs["result"]["hyperparams"]["lr"])
        assert child.data.params["seeds"] == "0,1,2" and child.data.params["optimizer"] == "rmsprop"
        assert child.data.metrics["objective"] == pytest.approx(trial.value)
        history = client.get_metric_history(child.info.run_id, "loss")
        assert [m.step for m in history] == list(range(200, 3001, 200))
        assert history[-1].value == pytest.approx(trial.value)  # the mean curve ends at the mean final loss
        assert len(client.get_metric_history(child.info.run_id, "effective_lr")) == 15


def test_the_mlflow_process_leaves_its_sqlite_store_in_one_file(tmp_path):
    """The MLflow process keeps the interpreter's final garbage collection off its heap at exit, but
    first closes its SQLite connections: with no other connection open, the WAL is folded back into mlflow.db, which
    holds every run on its own."""
    db = tmp_path / "mlflow.db"
    with tracking.Tracker(f"sqlite:///{db}", "test") as tracker:
        run_id = tracker.create_study_run("a study", "a run", {})
        tracker.finish_study(run_id, {"best_value": 0.5}, {"best_trial": 3})
        assert (tmp_path / "mlflow.db-wal").exists()  # while it runs, SQLite writes ahead
    assert not (tmp_path / "mlflow.db-wal").exists()
    alone = tmp_path / "copy" / "mlflow.db"
    alone.parent.mkdir()
    shutil.copy(db, alone)  # the file on its own, as a user would copy it
    run = MlflowClient(f"sqlite:///{alone}").get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["best_value"] == 0.5


def test_diverged_trials_are_pruned_with_reason_and_never_win(params, dataset, tmp_path):
    p = with_study(params, n_trials=8, seeds_per_trial=2,
                   search_space={"lr": config.Range(0.02, 3.0, "log")})
    result, client, parent, outcome = run("sgd", p, dataset, tmp_path)
    failed = [t for t in result.trials if t.state != TrialState.COMPLETE]
    assert failed and all(t.state == TrialState.PRUNED for t in failed)  # PRUNED: TPE ranks them below the rest
    assert all(storage_mod.failure(t) == storage_mod.Failure.DIVERGED for t in failed)
    assert all(t.user_attrs["fail_reason"].startswith("diverged") for t in failed)
    assert outcome.metrics["diverged"] == len(failed) and outcome.metrics["trials"] == 8
    assert outcome.best.state == TrialState.COMPLETE
    rows = read_csv(tmp_path / "sgd/trials.csv")
    assert sum(r["diverged"] == "1" for r in rows) == len(failed)
    assert all(r["objective"] == "" for r in rows if r["diverged"] == "1")
    statuses = {int(r.data.tags["trial_number"]): r.info.status for r in child_runs(client, parent)}
    assert all(statuses[t.number] == "FAILED" for t in failed)


def test_best_at_the_edge_of_its_range_is_flagged(params, dataset, tmp_path):
    p = with_study(params, n_trials=20, seeds_per_trial=1, search_space={"lr": config.Range(1e-4, 2e-4, "log")})
    run("sgd", p, dataset, tmp_path)
    best = json.loads((tmp_path / "sgd/best.json").read_text())
    assert any("high edge" in w and "lr" in w for w in best["warnings"])


def test_sqlite_storage_url_works_and_bad_url_is_masked(params, dataset, tmp_path):
    p = with_study(params, n_trials=3, seeds_per_trial=1)
    url = f"sqlite:///{tmp_path}/optuna.db"
    result, *_ = run("sgd", p, dataset, tmp_path, storage=url)
    loaded = optuna.load_study(study_name=result.study_name, storage=url)
    assert len(loaded.trials) == 3
    with pytest.raises(PipelineError) as err:
        storage_mod.open_storage("postgresql://alice:s3cret@127.0.0.1:1/optuna", params.study, tmp_path)
    assert "s3cret" not in str(err.value) and "postgresql://alice:***@127.0.0.1:1/optuna" in str(err.value)


def _set_trials(root, n_trials):
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["study"].update(n_trials=n_trials, seeds_per_trial=2)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _project(project_copy):
    """A budget no study finishes before the test interrupts it (trials take ~20 ms); the rerun
    then lowers it (n_trials is not part of the study's name), so its end is known."""
    _set_trials(project_copy, 5000)
    subprocess.run(["dvc", "repro", "prepare"], cwd=project_copy, env=run_env(), check=True, capture_output=True)
    return project_copy


def _counted(root, optimizer):
    storage = storage_mod.open_storage("journal", config.load_params(root / "params.yaml").study, root / "studies")
    summaries = [s for s in optuna.get_all_study_summaries(storage) if s.study_name.startswith(f"linreg-{optimizer}-")]
    if not summaries:
        return []
    s = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
    return [t for t in s.get_trials() if study.is_counted(t)]


def test_killed_study_resumes_without_losing_or_repeating_trials(project_copy):
    root = _project(project_copy)
    cmd = [sys.executable, "-m", "pipeline", "study", "rmsprop"]
    proc = subprocess.Popen(cmd, cwd=root, env=run_env(CI="true"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(_counted(root, "rmsprop")) < 20:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t.value for t in _counted(root, "rmsprop")}
    assert len(before) >= 20
    assert not (root / "studies/linreg/rmsprop/constant/trials.csv").exists()  # no half-written outputs

    target = len(before) + 30
    _set_trials(root, target)
    rerun = subprocess.run(cmd, cwd=root, env=run_env(CI="true"), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(before)} of {target} trials already done" in rerun.stderr
    after = _counted(root, "rmsprop")
    numbers = [t.number for t in after]
    assert len(after) == target and len(set(numbers)) == target
    assert all(t.value == before[t.number] for t in after if t.number in before)  # nothing lost or redone
    rows = read_csv(root / "studies/linreg/rmsprop/constant/trials.csv")
    assert len(rows) == target and sorted(int(r["number"]) for r in rows) == sorted(numbers)

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("airfoil-optimizers").experiment_id
    parents = client.search_runs([exp], "tags.run_type = 'study'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs(experiment_ids(client), f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'",
                                  max_results=1000)
    finished = [int(r.data.tags["trial_number"]) for r in children if r.info.status in ("FINISHED", "FAILED")]
    assert sorted(finished) == sorted(numbers)  # each counted trial logged exactly once
    assert all(r.info.status != "RUNNING" for r in children)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_cleanly_and_resumes(signum, project_copy):
    root = _project(project_copy)
    cmd = [sys.executable, "-m", "pipeline", "study", "adagrad"]
    # Started as a shell without job control starts `study ... &`: with SIGINT ignored.
    proc = subprocess.Popen(cmd, cwd=root, env=run_env(CI="true"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 120
    while time.time() < deadline and len(_counted(root, "adagrad")) < 10:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().endswith("interrupted")
    done = len(_counted(root, "adagrad"))
    assert done >= 10
    _set_trials(root, done + 20)
    rerun = subprocess.run(cmd, cwd=root, env=run_env(CI="true"), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert len({t.number for t in _counted(root, "adagrad")}) == done + 20


def test_ctrl_c_records_the_trial_in_flight_as_interrupted_and_its_run_killed(project_copy):
    """Sent while a trial trains (the network at 60 epochs: about 0.3 s a trial, so the signal lands
    inside it): Optuna keeps that trial as FAIL with failure "interrupted", MLflow its run as KILLED."""
    def edit(raw):
        raw["study"].update(n_trials=500, seeds_per_trial=2)
        raw["protocols"]["mlp"].update(epochs=60)
    root = project_copy
    raw = yaml.safe_load((root / "params.yaml").read_text())
    edit(raw)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run(["dvc", "repro", "prepare"], cwd=root, env=run_env(), check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "study", "adagrad", "--problem", "mlp"], cwd=root,
                            env=run_env(CI="true"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = storage_mod.open_storage("journal", config.load_params(root / "params.yaml").study, root / "studies")
    deadline, running = time.time() + 180, None
    while time.time() < deadline and running is None:
        names = [x.study_name for x in optuna.get_all_study_summaries(store)]
        trials = optuna.load_study(study_name=names[0], storage=store).get_trials() if names else []
        if sum(t.state == TrialState.COMPLETE for t in trials) >= 2:  # past compilation: trials take their time
            running = next((t for t in trials if t.state == TrialState.RUNNING), None)
        time.sleep(0.01)
    assert running is not None, proc.stderr.read() if proc.poll() is not None else "no trial ran"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().endswith("interrupted"), err[-2000:]
    after = optuna.load_study(study_name=names[0], storage=store).get_trials()[running.number]
    assert after.state == TrialState.FAIL and after.user_attrs["failure"] == "interrupted"
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    [run] = client.search_runs(experiment_ids(client), f"params.trial_number = '{running.number}'")
    assert run.info.status == "KILLED" and run.data.tags["failure"] == "interrupted"
    [parent] = client.search_runs(experiment_ids(client), "tags.run_type = 'study'")
    assert parent.info.status == "KILLED"


def test_trial_told_but_not_logged_is_completed_in_mlflow_on_resume(params, dataset, tmp_path, monkeypatch):
    """A crash between Optuna's tell and MLflow's log: the rerun logs the trial from its Optuna record."""
    p = with_study(params, n_trials=4, seeds_per_trial=2)
    real_log = mirror.log_trial

    def crash_on_trial_2(tracker, parent_id, optimizer, params_, trial):
        if trial.number == 2 and trial.state == TrialState.COMPLETE:
            raise KeyboardInterrupt
        return real_log(tracker, parent_id, optimizer, params_, trial)

    monkeypatch.setattr(mirror, "log_trial", crash_on_trial_2)
    with pytest.raises(KeyboardInterrupt):
        run("rmsprop", p, dataset, tmp_path)
    monkeypatch.setattr(mirror, "log_trial", real_log)
    result, client, parent, _ = run("rmsprop", p, dataset, tmp_path)
    assert result.trials[2].state == TrialState.COMPLETE and len(result.trials) == 4
    runs = {int(r.data.tags["trial_number"]): r for r in child_runs(client, parent)}
    assert sorted(runs) == [0, 1, 2, 3] and runs[2].info.status == "FINISHED"
    assert runs[2].data.metrics["objective"] == pytest.approx(result.trials[2].value)
    history = client.get_metric_history(runs[2].info.run_id, "loss")
    assert [m.step for m in history] == list(range(200, 3001, 200))


def test_lock_of_a_killed_worker_does_not_block_the_next_run(params, dataset, tmp_path):
    """SIGKILL while holding the journal lock: the next run proceeds at once (no stale lock)."""
    lock = tmp_path / "optuna.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from pipeline.stages.study.storage import FlockLock; "
        f"FlockLock(Path({str(lock)!r})).acquire(); print('held', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free at once: raises if the dead holder kept it
    os.close(fd)  # (Optuna's own file locks would block the next run for a 30 s grace period)
    result, *_ = run("sgd", with_study(params, n_trials=2, seeds_per_trial=1), dataset, tmp_path)
    assert len(result.trials) == 2


def test_diverged_trials_teach_the_sampler_to_avoid_their_region(params, dataset, tmp_path):
    """lr up to 10 for SGD: about a quarter of the range diverges. Told as PRUNED, diverged trials
    rank below every completed one in TPE, so it stops proposing them (told as FAIL, TPE ignores
    them and keeps proposing the region: 40 of the first 50 trials, 50 of the second)."""
    p = with_study(params, n_trials=100, seeds_per_trial=1, search_space={"lr": config.Range(1e-4, 10.0, "log")})
    run("sgd", p, dataset, tmp_path)
    diverged = [int(r["diverged"]) for r in read_csv(tmp_path / "sgd/trials.csv")]
    assert sum(diverged[:50]) > sum(diverged[50:]), diverged
    assert sum(diverged) < 20


def test_dvc_lists_exactly_the_files_that_name_the_study():
    """dvc.yaml's study deps and the study's code digest are one list: a file DVC reruns the stage
    for, but that leaves the name as it was, would keep the old code's trials (randomness.py did)."""
    import yaml
    from pipeline.stages.study import search
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["study"]["deps"]
    named = [str(p.relative_to(ROOT)) for p in search.RESULT_CODE]
    assert sorted(deps) == sorted(["data/prepared", *named])
    for module in ("randomness", "engine", "network", "optimizers", "pieces", "schedules", "space", "problems"):
        assert f"pipeline/core/{module}.py" in named  # what a trial computes with, written here by hand


def test_editing_any_study_dependency_names_a_new_study(params, dataset, tmp_path, monkeypatch):
    """Each file dvc.yaml lists for the study, edited in a copy of the package: the study's name
    changes, so the next run starts a new study instead of resuming the old code's."""
    import shutil
    from pipeline.core import sourcecode
    from pipeline.stages.study import search
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    copied = sourcecode.imported_files(tmp_path / "pipeline/stages/study/__init__.py", tmp_path)
    assert [p.relative_to(tmp_path) for p in copied] == [p.relative_to(ROOT) for p in search.RESULT_CODE]
    monkeypatch.setattr(search, "RESULT_CODE", copied)
    monkeypatch.setattr(sourcecode, "ROOT", tmp_path)
    before = search.study_name("rmsprop", params, dataset)
    for path in copied:
        text = path.read_text()
        path.write_text(text + "\n# an edit\n")
        assert search.study_name("rmsprop", params, dataset) != before, path.relative_to(tmp_path)
        path.write_text(text)
    assert search.study_name("rmsprop", params, dataset) == before


def test_a_study_after_an_edit_to_randomness_runs_new_trials(project_copy, raw_file):
    """End to end, in a copy whose own code runs: the finished study is not resumed after the edit."""
    def edit(raw):
        raw["study"].update(n_trials=3, seeds_per_trial=1)
    root = prepared_project(project_copy, raw_file, edit)
    first = cli("study", "sgd", cwd=root, CI="true", PYTHONPATH=str(root))
    assert first.returncode == 0, first.stderr[-2000:]
    again = cli("study", "sgd", cwd=root, CI="true", PYTHONPATH=str(root))
    assert "3 of 3 trials already done" in again.stderr  # unchanged code: resumed, nothing to run
    randomness = root / "pipeline/core/randomness.py"
    randomness.write_text(randomness.read_text() + "\n# the batches' code, edited\n")
    edited = cli("study", "sgd", cwd=root, CI="true", PYTHONPATH=str(root))
    assert edited.returncode == 0, edited.stderr[-2000:]
    import re
    said = lambda result: re.findall(r"(linreg-sgd-constant-[0-9a-f]{16}): (\d) of 3 trials already done", result.stderr)
    assert said(again) == [(said(first)[0][0], "3")] and said(first)[0][1] == "0"
    assert said(edited)[0][1] == "0" and said(edited)[0][0] != said(first)[0][0]  # a new study, run from scratch
    names = {said(first)[0][0], said(edited)[0][0]}
    assert len(names) == 2


def test_concurrent_workers_never_log_a_trial_twice(project_copy):
    """A dead worker's finished trials are missing from MLflow; four workers start at once and each
    logs what is missing. Each trial must end up with exactly one run (each is claimed first)."""
    root = project_copy
    _set_trials(root, 40)
    subprocess.run(["dvc", "repro", "prepare"], cwd=root, env=run_env(), check=True, capture_output=True)
    cmd = [sys.executable, "-m", "pipeline", "study", "sgd"]
    first = subprocess.run(cmd, cwd=root, env=run_env(CI="true"), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("airfoil-optimizers").experiment_id
    [parent] = client.search_runs([exp], "tags.run_type = 'study'")
    children = client.search_runs(experiment_ids(client), f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                  max_results=1000)
    for r in children:  # as if the worker that ran these had died before its MLflow writes landed
        if int(r.data.tags["trial_number"]) >= 5:
            client.delete_run(r.info.run_id)
    workers = [subprocess.Popen(cmd, cwd=root, env=run_env(CI="true"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(4)]
    assert [w.wait(timeout=600) for w in workers] == [0, 0, 0, 0], [w.stderr.read()[-2000:] for w in workers]
    children = client.search_runs(experiment_ids(client), f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                  max_results=1000)
    numbers = sorted(int(r.data.tags["trial_number"]) for r in children)
    assert numbers == list(range(40))  # every trial once: none missing, none twice
    claims = [k for k in client.get_run(parent.info.run_id).data.params if k.startswith("mirror.trial_")]
    assert len(claims) == 35  # the 35 logged again, each claimed by exactly one worker


def test_trial_failed_as_stale_just_before_its_tell_is_left_to_the_other_worker(params, dataset, tmp_path):
    """A hung worker wakes between recording its result and telling Optuna, after another worker
    failed the trial by heartbeat: Optuna's tell raises ValueError, and the worker goes on."""
    p = with_study(params, n_trials=3, seeds_per_trial=1)
    store = storage_mod.open_storage(f"sqlite:///{tmp_path}/s.db", p.study)
    with tracking.Tracker(f"sqlite:///{tmp_path}/mlflow.db", "test") as tracker:
        opened, created = study.open_study("sgd", p, dataset, store)
        sink = mirror.Mirror.attach(tracker, opened, created, "sgd", p, {})
        real_tell, victim = opened.tell, []

        def fail_then_tell(trial, *args, **kwargs):  # the other worker's stale check lands just before
            if not victim and kwargs.get("state") is None:
                victim.append(trial.number)
                store.set_trial_state_values(storage_mod.trial_id(store, opened, trial.number), TrialState.FAIL)
            return real_tell(trial, *args, **kwargs)

        opened.tell = fail_then_tell
        timings = study.run_trials(opened, "sgd", p, dataset, store, sink)
    trials = opened.get_trials()
    assert trials[victim[0]].state == TrialState.FAIL  # the other worker's verdict stands
    assert sum(study.is_counted(t) for t in trials) == 3 and len(timings) == 3  # and this worker went on


class RecordingSink:
    """A sink with the shape of an Optuna callback that only records what the loop hands it."""

    def __init__(self):
        self.finished, self.synced, self.aborted = [], 0, 0

    def on_finished(self, study, trial):
        self.finished.append((trial.number, trial.state))

    def sync(self, study):
        self.synced += 1

    def abort(self):
        self.aborted += 1

    def background_seconds(self, number):
        return 0.0


def test_the_trial_loop_hands_each_finished_trial_to_its_sink_and_knows_no_mlflow(params, dataset, tmp_path):
    import ast
    from pathlib import Path

    p = with_study(params, n_trials=4, seeds_per_trial=1, search_space={
        **params.study.search_space, "lr": config.Range(0.5, 10.0, "log")})  # some diverge, all are handed over
    store = storage_mod.open_storage("journal", p.study, tmp_path)
    opened, created = study.open_study("sgd", p, dataset, store)
    sink = RecordingSink()
    timings = study.run_study(opened, "sgd", p, dataset, store, sink)
    told = opened.get_trials()
    assert created and len(told) == 4 and len(timings) == 4
    assert sink.finished == [(t.number, t.state) for t in told] and sink.synced == 1 and sink.aborted == 0
    assert {state for _, state in sink.finished} <= {TrialState.COMPLETE, TrialState.PRUNED}

    source = ast.parse(Path(study.__file__).read_text())
    imported = {a.name for n in ast.walk(source) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(source) if isinstance(n, ast.ImportFrom)}
    imported |= {f"{n.module}.{a.name}" for n in ast.walk(source) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not [m for m in imported if "mlflow" in m or "tracking" in m or "mirror" in m], imported


def test_an_interrupted_trial_is_failed_handed_to_the_sink_and_the_sink_aborts(params, dataset, tmp_path, monkeypatch):
    p = with_study(params, n_trials=4, seeds_per_trial=1)
    store = storage_mod.open_storage("journal", p.study, tmp_path)
    opened, _ = study.open_study("sgd", p, dataset, store)
    real = study.search.evaluate_trial

    def stop_on_the_third(hyper, *args):
        if len(opened.get_trials()) == 3:
            raise KeyboardInterrupt
        return real(hyper, *args)

    monkeypatch.setattr(study.search, "evaluate_trial", stop_on_the_third)
    sink = RecordingSink()
    with pytest.raises(KeyboardInterrupt):
        study.run_study(opened, "sgd", p, dataset, store, sink)
    assert [state for _, state in sink.finished] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    assert opened.get_trials()[2].user_attrs["failure"] == "interrupted" and sink.aborted == 1


def test_a_ctrl_c_the_moment_a_trial_is_told_still_hands_it_to_the_sink(params, dataset, tmp_path):
    """A real SIGINT right after Optuna has the trial and before the sink does: the sink still gets
    it (else its MLflow run would be missing until a rerun), then the study stops."""
    import os
    import signal

    from pipeline import cli as command_line

    p = with_study(params, n_trials=4, seeds_per_trial=1)
    store = storage_mod.open_storage("journal", p.study, tmp_path)
    opened, _ = study.open_study("sgd", p, dataset, store)
    real_tell = opened.tell

    def tell_then_ctrl_c(trial, *args, **kwargs):
        frozen = real_tell(trial, *args, **kwargs)
        if trial.number == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler at its next bytecode: here
        return frozen

    opened.tell = tell_then_ctrl_c
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    command_line.install_signal_handlers()  # as `python -m pipeline` does
    sink = RecordingSink()
    try:
        with pytest.raises(KeyboardInterrupt):
            study.run_study(opened, "sgd", p, dataset, store, sink)
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    told = [(t.number, t.state) for t in opened.get_trials() if t.state != TrialState.RUNNING]
    assert [number for number, _ in told] == [0, 1] and told[1][1] == TrialState.COMPLETE
    assert sink.finished == told and sink.aborted == 1  # no trial told that the sink has not
