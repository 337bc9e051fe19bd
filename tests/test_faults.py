"""Faults below the process, produced for real: a torn journal, a corrupt record, a full disk.
Each test runs the real `python -m pipeline study` command and reads the journal with Optuna."""
import hashlib
import json
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml

from pipeline.core import config
from pipeline.stages.study import storage as storage_mod
from pipeline.stages.study import trials as study
from conftest import assert_one_line_error, cli, prepared_project, read_csv, run_env

JOURNAL = Path("studies/optuna.journal")


def make_project(tmp_path, raw_file, n_trials):
    def edit(raw):
        raw["study"].update(n_trials=n_trials, seeds_per_trial=2)
    return prepared_project(tmp_path / "project", raw_file, edit)


def set_trials(root, n_trials):
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["study"]["n_trials"] = n_trials
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def counted(root, optimizer) -> dict:
    """trial number -> value of every counted trial of the optimizer's study, read by Optuna."""
    store = storage_mod.open_storage("journal", config.load_params(root / "params.yaml").study,
                                     root / "studies")
    names = [s.study_name for s in optuna.get_all_study_summaries(store) if s.study_name.startswith(f"linreg-{optimizer}-")]
    if not names:
        return {}
    return {t.number: t.value for t in optuna.load_study(study_name=names[0], storage=store).get_trials()
            if study.is_counted(t)}


def assert_stops_with(result, *fragments):
    """A stage that got going logs its progress; it stops with one error line and no traceback."""
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(f in last for f in fragments), last


def every_line_parses(path: Path) -> bool:
    data = path.read_bytes()
    return data.endswith(b"\n") and all(json.loads(line) is not None for line in data.splitlines())


def test_a_torn_last_record_is_cut_back_once_and_every_study_survives(raw_file, tmp_path):
    root = make_project(tmp_path, raw_file, n_trials=4)
    for optimizer in ("sgd", "adagrad"):
        assert cli("study", optimizer, cwd=root, CI="true").returncode == 0
    sgd_before, adagrad_before = counted(root, "sgd"), counted(root, "adagrad")
    journal = root / JOURNAL
    whole = journal.read_bytes()
    last = whole[:-1].rsplit(b"\n", 1)[1]
    torn = last[: len(last) // 2]  # a write cut in the middle: half a record, no newline
    journal.write_bytes(whole + torn)

    set_trials(root, 6)
    first = cli("study", "sgd", cwd=root, CI="true")
    assert first.returncode == 0, first.stderr
    warnings = [line for line in first.stderr.splitlines() if "torn record" in line]
    assert len(warnings) == 1 and f"{len(torn)} bytes" in warnings[0], first.stderr
    kept = list(journal.parent.glob("optuna.journal.torn-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == torn
    assert every_line_parses(journal)
    second = cli("study", "adagrad", cwd=root, CI="true")  # the repair happened once
    assert second.returncode == 0 and "torn record" not in second.stderr, second.stderr

    sgd_after, adagrad_after = counted(root, "sgd"), counted(root, "adagrad")
    assert len(sgd_after) == 6 and all(sgd_after[n] == v for n, v in sgd_before.items())
    assert len(adagrad_after) == 6 and all(adagrad_after[n] == v for n, v in adagrad_before.items())


def test_a_corrupt_middle_record_is_refused_in_one_line_and_the_file_is_unchanged(raw_file, tmp_path):
    root = make_project(tmp_path, raw_file, n_trials=3)
    assert cli("study", "sgd", cwd=root, CI="true").returncode == 0
    journal = root / JOURNAL
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[4] = b'{"op_code": 5, "worker_id": "x", "trial_id": 0, "user_attr": {"a": \n'  # not JSON
    journal.write_bytes(b"".join(lines))
    before = hashlib.sha256(journal.read_bytes()).hexdigest()

    set_trials(root, 5)
    result = cli("study", "sgd", cwd=root, CI="true")
    assert_one_line_error(result, str(journal.resolve()), "record 5 is corrupt", "head -n 4", "optuna studies")
    assert hashlib.sha256(journal.read_bytes()).hexdigest() == before
    assert not list(journal.parent.glob("optuna.journal.torn-*"))


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_studies_disk(raw_file, tmp_path):
    """A project whose studies/ lives on a tmpfs of 48 KiB: the journal fills it mid-study."""
    root = make_project(tmp_path, raw_file, n_trials=60)
    mount = root / "studies"
    if not _mount_tmpfs(mount, "48k"):
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    yield root
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_study_in_one_line_and_the_rerun_does_only_the_missing_trials(small_studies_disk):
    root = small_studies_disk
    result = cli("study", "sgd", cwd=root, CI="true")
    assert_stops_with(result, "ENOSPC", str((root / JOURNAL).resolve()), "free space and rerun")
    assert every_line_parses(root / JOURNAL)  # no half-written record
    assert not (root / "studies/linreg/sgd/constant/trials.csv").exists()
    before = counted(root, "sgd")
    assert 0 < len(before) < 60

    subprocess.run(["mount", "-o", "remount,size=16m", str(root / "studies")], check=True)  # space freed
    rerun = cli("study", "sgd", cwd=root, CI="true")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(before)} of 60 trials already done" in rerun.stderr
    after = counted(root, "sgd")
    assert len(after) == 60 and all(after[n] == v for n, v in before.items())  # nothing lost or redone
    assert len(read_csv(root / "studies/linreg/sgd/constant/trials.csv")) == 60


def test_an_output_that_cannot_be_written_leaves_the_old_file_and_says_why(raw_file, tmp_path):
    """The outputs are atomic: a full disk while writing trials.csv keeps the previous one whole."""
    root = make_project(tmp_path, raw_file, n_trials=3)
    assert cli("study", "sgd", cwd=root, CI="true").returncode == 0
    out_dir = root / "studies/linreg/sgd/constant"
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    moved = tmp_path / "outputs"
    out_dir.rename(moved)
    if not _mount_tmpfs(out_dir, "256k"):
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        for name, content in before.items():
            (out_dir / name).write_bytes(content)
        subprocess.run(["dd", "if=/dev/zero", f"of={out_dir / '.filler'}", "bs=4k"], capture_output=True)  # disk full
        set_trials(root, 40)
        result = cli("study", "sgd", cwd=root, CI="true")
        assert_stops_with(result, "ENOSPC", "studies/linreg/sgd/constant/", "is unchanged")
        after = {p.name: p.read_bytes() for p in out_dir.iterdir() if p.name != ".filler"}
        assert after == before  # the old outputs whole, and no temporary file left
        assert len(counted(root, "sgd")) == 40  # the trials themselves are kept in the journal
    finally:
        subprocess.run(["umount", "-l", str(out_dir)], check=False)


# --- promises about every command ---------------------------------------------------------------

FRESH_PROJECT_ERRORS = [  # command, what the one line names
    (["prepare"], "data/raw/airfoil_self_noise.dat"),
    (["train", "--optimizer", "sgd"], "dvc repro prepare"),
    (["study", "sgd"], "dvc repro prepare"),
    (["evaluate"], "dvc repro prepare"),
    (["report"], "dvc repro prepare"),
    (["ui", "--print-url"], "no MLflow store at mlflow.db"),
]


@pytest.mark.parametrize("args,named", FRESH_PROJECT_ERRORS, ids=[a[0] for a, _ in FRESH_PROJECT_ERRORS])
def test_every_command_on_a_fresh_project_stops_in_one_line_and_writes_nothing(args, named, tmp_path):
    root = tmp_path / "fresh"
    root.mkdir()
    (root / "params.yaml").write_bytes((Path(__file__).resolve().parents[1] / "params.yaml").read_bytes())
    result = cli(*args, cwd=root, MLFLOW_TRACKING_URI="")
    assert_one_line_error(result, named)
    assert sorted(p.name for p in root.iterdir()) == ["params.yaml"]  # no mlflow.db, no journal, no outputs


def test_a_crash_in_native_code_leaves_every_threads_python_stack_in_the_log(raw_file, tmp_path):
    """No code can catch a segfault inside TensorFlow, but it must not leave only "exited with 139"
    in DVC's log: the process prints where each of its threads was, then dies of the signal."""
    import signal
    import sys
    import time

    project = prepared_project(tmp_path / "p", raw_file)
    train = subprocess.Popen([sys.executable, "-m", "pipeline", "train", "--problem", "mlp", "--optimizer", "sgd",
                              "--epochs", "200"], cwd=project, env=run_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    maps, deadline = Path(f"/proc/{train.pid}/maps"), time.monotonic() + 120
    while "_pywrap_tensorflow_internal" not in maps.read_text():  # crash it inside TensorFlow's process
        assert train.poll() is None and time.monotonic() < deadline, train.stderr.read()[-2000:]
        time.sleep(0.05)
    train.send_signal(signal.SIGSEGV)
    _, stderr = train.communicate(timeout=60)
    assert train.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in stderr
    assert f'File "{Path(__file__).resolve().parents[1] / "pipeline"}' in stderr, stderr[-3000:]


def test_evaluate_loads_keras_and_arrow_before_its_threads_and_arrow_starts_no_allocator_thread():
    """The only stage that loads native libraries late is evaluate (Keras, and through pandas Arrow, for
    the Keras comparison): it loads them before its problems run side by side, and Arrow's jemalloc
    background thread, where pyarrow's known intermittent segfaults happen, never starts."""
    import sys

    probe = """if True:
        import glob, sys
        from pipeline.core import config, engine
        from pipeline.stages import evaluate
        class Started(Exception): pass
        def side_by_side(work, names):
            raise Started("keras" in sys.modules, "pyarrow" in sys.modules)
        engine.side_by_side = side_by_side
        before = "keras" in sys.modules or "pyarrow" in sys.modules
        try:
            evaluate.evaluate(None, config.load_params("params.yaml"), None)
        except Started as started:
            print(before, *started.args)
        print(*sorted(open(task).read().strip() for task in glob.glob("/proc/self/task/*/comm")))
    """
    ran = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    loaded, threads = ran.stdout.splitlines()
    assert loaded == "False True True"  # neither at import, both before the threads
    assert "jemalloc_bg_thd" not in threads.split(), threads


def test_ui_hands_the_store_to_mlflow_through_the_environment_not_the_command_line(postgres, tmp_path):
    import os
    import signal
    import sys
    import time

    import psutil
    from mlflow import MlflowClient
    from servers import PASSWORD, free_port

    uri = postgres.create_database("uistore")
    MlflowClient(uri).create_experiment("airfoil-optimizers")
    root = tmp_path / "ui"
    root.mkdir()
    (root / "params.yaml").write_bytes((Path(__file__).resolve().parents[1] / "params.yaml").read_bytes())
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "ui", "--port", str(port)], cwd=root,
                            env={**os.environ, "MLFLOW_TRACKING_URI": uri}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert f"http://127.0.0.1:{port}/#/experiments/" in proc.stdout.readline()
        deadline, serving = time.monotonic() + 120, []
        while time.monotonic() < deadline and not serving:  # mlflow ui and the server it starts
            tree = psutil.Process(proc.pid).children(recursive=True)
            serving = [p for p in tree if "uvicorn" in " ".join(p.cmdline()) or "gunicorn" in " ".join(p.cmdline())]
            time.sleep(0.2)
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        cmdlines = [Path(f"/proc/{p.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for p in tree]
        assert any("mlflow" in c and " ui" in c for c in cmdlines), cmdlines
        assert serving, cmdlines  # the server got going with the store it was handed
        assert not [c for c in cmdlines if PASSWORD in c]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def running(procs) -> list:
    """The processes of `procs` that still run (a zombie, dead and not yet reaped, does not)."""
    import psutil

    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_signal_to_ui_ends_every_process_of_the_mlflow_server_under_it(tmp_path, signum):
    """As `timeout`, a service manager or a container stop sends it: nothing of MLflow's server
    (uvicorn, the job runner, its huey consumers) outlives `pipeline ui`, and the port is free."""
    import signal
    import socket
    import sys
    import time
    import urllib.request

    import psutil
    from mlflow import MlflowClient
    from servers import free_port

    root = tmp_path / "ui"
    root.mkdir()
    (root / "params.yaml").write_bytes((Path(__file__).resolve().parents[1] / "params.yaml").read_bytes())
    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("airfoil-optimizers")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "ui", "--port", str(port)], cwd=root,
                            env=run_env(MLFLOW_TRACKING_URI=uri), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline, tree = time.monotonic() + 180, []
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            tree = psutil.Process(proc.pid).children(recursive=True)
            names = " ".join(" ".join(p.cmdline()) for p in running(tree))
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                if "huey_consumer" in names:  # the job runner's consumers are up too
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(f"mlflow ui did not serve on {port} with its consumers within 180 s")
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert len(tree) >= 5, [p.cmdline() for p in tree]

        proc.send_signal(getattr(signal, signum))
        assert proc.wait(90) == 130, proc.stderr.read()[-2000:]
        assert running(tree) == []
        with socket.socket() as s:  # nothing listens on the port any more (TIME_WAIT left by /health aside)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in running(tree):
            p.kill()


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_inside_a_deferred_block_waits_for_the_block_to_finish(signum):
    """Sent deterministically inside the block: the block completes, then the interrupt is raised."""
    import os
    import signal

    from pipeline import cli as command_line
    from pipeline.core.interrupts import interrupts_deferred

    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    command_line.install_signal_handlers()  # as `python -m pipeline` does
    steps = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                steps.append("started")
                os.kill(os.getpid(), getattr(signal, signum))
                for _ in range(1000):  # Python runs handlers between bytecodes: plenty of chances here
                    steps.append("working") if len(steps) < 3 else None
                steps.append("finished")
            steps.append("after the block")  # never reached: the interrupt comes as the block ends
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert steps == ["started", "working", "working", "finished"]


# --- servers that go away under a running study ----------------------------------------------

def _worker_project(tmp_path, raw_file, n_trials, **study_changes):
    """Trials of ~0.1 s (40 epochs, one record), so a study runs long enough to be cut."""
    def edit(raw):
        raw["study"].update(n_trials=n_trials, seeds_per_trial=2, **study_changes)
        raw["train"].update(epochs=40, record_every=3000)
    return prepared_project(tmp_path / "project", raw_file, edit)


def _start(root, env, *args, log_name):
    import sys
    log = open(root / log_name, "w")
    return subprocess.Popen([sys.executable, "-m", "pipeline", "study", "sgd", *args], cwd=root, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _study_on(root, url):
    from pipeline.core import data
    from pipeline.stages.study import search

    params = config.for_problem(config.load_params(root / "params.yaml"), "linreg")
    name = search.study_name("sgd", params, data.load_prepared(root / "data/prepared"))
    try:
        return optuna.load_study(study_name=name, storage=url)
    except Exception:  # not created yet, or the server is down
        return None


def _wait_for(condition, timeout=300):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def _counted_on(root, url) -> list:
    s = _study_on(root, url)
    return [t for t in s.get_trials() if study.is_counted(t)] if s else []


@pytest.fixture
def own_postgres():
    """A PostgreSQL cluster of this test's own: it is stopped and started under the workers."""
    from servers import Postgres

    server = Postgres()
    yield server
    server.stop()


def test_workers_wait_out_a_database_restart_and_end_with_exactly_their_budget(own_postgres, raw_file, tmp_path):
    import time

    from servers import PASSWORD

    url = own_postgres.create_database("optuna")
    root = _worker_project(tmp_path, raw_file, n_trials=40, reconnect_s=60)
    env = run_env(OPTUNA_STORAGE=url, CI="true")  # MLflow in the project's SQLite file
    worker = _start(root, env, "--workers", "2", log_name="workers.log")
    _wait_for(lambda: len(_counted_on(root, url)) >= 8)
    own_postgres.halt()
    time.sleep(3)  # the workers are mid-trial when the server goes: they must wait, not stop
    assert worker.poll() is None, (root / "workers.log").read_text()[-3000:]
    own_postgres.start()
    assert worker.wait(300) == 0, (root / "workers.log").read_text()[-3000:]

    log = (root / "workers.log").read_text()
    assert "lost the Optuna storage" in log and "is back" in log and PASSWORD not in log
    counted = _counted_on(root, url)
    numbers = [t.number for t in counted]
    assert len(numbers) == len(set(numbers)) >= 40  # none counted twice
    rows = read_csv(root / "studies/linreg/sgd/constant/trials.csv")
    assert [int(r["number"]) for r in rows] == sorted(numbers)[:40]  # exactly the budget in the outputs
    s = _study_on(root, url)
    assert not [t for t in s.get_trials() if t.state == optuna.trial.TrialState.RUNNING]

    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.run_type = 'trial'",
                              max_results=5000)
    per_trial = [int(r.data.tags["trial_number"]) for r in runs]
    assert sorted(per_trial) == sorted(t.number for t in s.get_trials())  # one run per trial, lost ones too


def test_past_reconnect_s_the_worker_stops_in_one_line_and_the_rerun_resumes(own_postgres, raw_file, tmp_path):
    from servers import PASSWORD

    url = own_postgres.create_database("optuna")
    root = _worker_project(tmp_path, raw_file, n_trials=30, reconnect_s=2)
    env = run_env(OPTUNA_STORAGE=url, CI="true")
    worker = _start(root, env, log_name="first.log")
    _wait_for(lambda: len(_counted_on(root, url)) >= 5)
    own_postgres.halt()
    assert worker.wait(120) == 1
    last = (root / "first.log").read_text().strip().splitlines()[-1]
    assert last.startswith("error: Optuna storage postgresql://postgres:***@") and "unreachable for 2 s" in last
    assert PASSWORD not in (root / "first.log").read_text()
    own_postgres.start()
    before = {t.number: t.value for t in _counted_on(root, url)}
    rerun = _start(root, env, log_name="rerun.log")
    assert rerun.wait(300) == 0, (root / "rerun.log").read_text()[-3000:]
    after = {t.number: t.value for t in _counted_on(root, url)}
    assert len(after) == 30 and all(after[n] == v for n, v in before.items())


def test_a_lost_tracking_server_does_not_stop_the_study_and_the_rerun_logs_each_missing_run_once(raw_file, tmp_path):
    from mlflow import MlflowClient
    from servers import MlflowServer

    backend = f"sqlite:///{tmp_path / 'tracking.db'}"
    server = MlflowServer(backend, tmp_path / "artifacts")
    root = _worker_project(tmp_path, raw_file, n_trials=40)
    env = run_env(MLFLOW_TRACKING_URI=server.url, CI="true")  # Optuna in the journal file
    journal = lambda: storage_mod.open_storage("journal", config.load_params(root / "params.yaml").study,  # noqa: E731
                                               root / "studies")
    worker = _start(root, env, log_name="first.log")
    try:
        _wait_for(lambda: len(_counted_on(root, journal())) >= 8)
    finally:
        server.stop()
    assert worker.wait(300) == 0, (root / "first.log").read_text()[-3000:]
    log = (root / "first.log").read_text()
    waiting = [line for line in log.splitlines() if "waiting for MLflow" in line]
    assert len(waiting) == 1 and "rerun `python -m pipeline study sgd --problem linreg`" in waiting[0], log[-3000:]
    gone = [i for i, line in enumerate(log.splitlines()) if "the study goes on without MLflow" in line]
    assert len(gone) == 1, log[-3000:]  # one warning when it goes, before the one at the end
    went = log.splitlines()[gone[0]]
    assert went.startswith("WARNING ") and went.endswith("; the study goes on without MLflow (Optuna keeps every trial)")
    assert gone[0] < log.splitlines().index(waiting[0])
    assert "Traceback" not in log
    counted = _counted_on(root, journal())
    assert len(counted) == 40 and len(read_csv(root / "studies/linreg/sgd/constant/trials.csv")) == 40  # Optuna kept every trial

    server = MlflowServer(backend, tmp_path / "artifacts", port=server.port)  # back, at the same address
    try:
        rerun = _start(root, env, log_name="rerun.log")
        assert rerun.wait(300) == 0, (root / "rerun.log").read_text()[-3000:]
        assert "waiting for MLflow" not in (root / "rerun.log").read_text()
        client = MlflowClient(server.url)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.run_type = 'trial'",
                                  max_results=5000)
    finally:
        server.stop()
    numbers = sorted(int(r.data.tags["trial_number"]) for r in runs)
    assert numbers == sorted(t.number for t in _study_on(root, journal()).get_trials())  # each trial exactly once
    assert all(r.info.status in ("FINISHED", "FAILED", "KILLED") for r in runs)
    import re
    assert int(re.search(r"(\d+) trial run\(s\)", waiting[0]).group(1)) > 0  # the study did go on without MLflow


def test_an_interrupt_while_the_journal_lock_is_held_never_strands_it(tmp_path):
    """Ctrl-C inside the locked section (where it landed in a loaded CI run, just after flock
    returned): the lock is free at once for this process and for others."""
    import sys

    from pipeline.stages.study import journal

    path = tmp_path / "optuna.journal"
    lock = storage_mod.FlockLock(tmp_path / "optuna.lock")
    backend = journal.Journal(path, lock)

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backend._locked(interrupted)
    backend.append_logs([{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}])  # not blocked
    other = subprocess.run([sys.executable, "-c", (
        "from pathlib import Path; from pipeline.stages.study.storage import FlockLock; "
        f"FlockLock(Path({str(tmp_path / 'optuna.lock')!r})).acquire(); print('acquired')")],
        capture_output=True, text=True, timeout=60)
    assert other.stdout.strip() == "acquired" and every_line_parses(path)


def test_a_full_disk_under_the_mlflow_store_leaves_the_study_running_and_the_rerun_logs_the_rest(raw_file, tmp_path):
    """MLflow's SQLite store on a 6 MiB tmpfs: it fills mid-study; Optuna keeps every trial, the
    stage says how many runs wait for MLflow, and once there is room the rerun writes each once."""
    from mlflow import MlflowClient

    root = make_project(tmp_path, raw_file, n_trials=300)
    store = tmp_path / "mlstore"
    if not _mount_tmpfs(store, "6m"):
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        uri = f"sqlite:///{store}/mlflow.db"
        first = cli("study", "sgd", cwd=root, CI="true", MLFLOW_TRACKING_URI=uri)
        assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr[-3000:]
        waiting = [line for line in first.stderr.splitlines() if "waiting for MLflow" in line]
        assert len(waiting) == 1 and "full" in first.stderr, first.stderr[-3000:]
        assert len(counted(root, "sgd")) == 300 and len(read_csv(root / "studies/linreg/sgd/constant/trials.csv")) == 300

        subprocess.run(["mount", "-o", "remount,size=64m", str(store)], check=True)  # space freed
        rerun = cli("study", "sgd", cwd=root, CI="true", MLFLOW_TRACKING_URI=uri)
        assert rerun.returncode == 0 and "waiting for MLflow" not in rerun.stderr, rerun.stderr[-3000:]
        client = MlflowClient(uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.run_type = 'trial'",
                                  max_results=5000)
        assert sorted(int(r.data.tags["trial_number"]) for r in runs) == list(range(300))  # each exactly once
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)
