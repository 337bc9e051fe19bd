import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.core import config, data, paths
from pipeline.stages import download, prepare

ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["required"]  # under CI=true a skip fails

# `make test` runs the suite on two pytest-xdist workers, a module at a time per worker
# (--dist loadfile: a module's fixtures, such as the browser's pipeline run, are built once).
# Modules go out in the order collected, so the longest go first and the short ones fill in at the
# end (longest processing time first). Measured serially: variations 307 s, faults 211, scaleout 209,
# report 181, browser 136, study 134, network 84, engine 62; every other module under 40 s.
LONGEST_FIRST = ["test_variations.py", "test_faults.py", "test_scaleout.py", "test_report.py", "test_browser.py",
                 "test_study.py", "test_network.py", "test_engine.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its order


def airfoil_source() -> str | None:
    """The offline mirror from AIRFOIL_MIRROR (relative paths are from the project root), if set."""
    mirror = os.environ.get(download.MIRROR_ENV)
    if mirror and "://" not in mirror:
        mirror = str((ROOT / mirror).resolve())
    return mirror


PARAMS = config.load_params(ROOT / "params.yaml")  # the committed knobs: book settings, protocols, ranges


@pytest.fixture(scope="session")
def params() -> config.Params:
    return PARAMS


@pytest.fixture(scope="session")
def raw_file(tmp_path_factory) -> Path:
    """The real airfoil file, fetched by the real download code (from the mirror when offline)."""
    dest = tmp_path_factory.mktemp("raw") / "airfoil_self_noise.dat"
    download.download(PARAMS.data.url, PARAMS.data.sha1, dest, mirror=airfoil_source(),
                      timeout=PARAMS.data.timeout_s, retries=1, backoff=0.1)
    return dest


@pytest.fixture(scope="session")
def dataset(tmp_path_factory, raw_file) -> data.Dataset:
    out = tmp_path_factory.mktemp("prepared")
    prepare.prepare(raw_file, out, PARAMS.data.n_rows, PARAMS.data.sha1)
    return data.load_prepared(out)


def copy_project(dest: Path, tests: bool = True) -> Path:
    """The committed project (plus uncommitted edits), copied into a fresh git repository with an
    identity of its own: `dvc exp run` commits, and a fresh machine has no global git identity."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file() and (tests or not name.startswith("tests/")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    for cmd in (["init", "-q"], ["config", "user.name", "test"], ["config", "user.email", "test@localhost"],
                ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run(["git", *cmd], cwd=dest, check=True)
    return dest


@pytest.fixture
def project_copy(tmp_path) -> Path:
    return copy_project(tmp_path / "project")


def run_env(**extra) -> dict:
    env = dict(os.environ)
    if airfoil_source():
        env[download.MIRROR_ENV] = airfoil_source()
    env.update(extra)
    return env


def prepared_project(dest: Path, raw_file: Path, edit=None) -> Path:
    """A project folder with params.yaml (changed by `edit(raw_params)`) and the real prepared data."""
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    if edit:
        edit(raw)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    prepare.prepare(raw_file, dest / paths.PREPARED_DIR, raw["data"]["n_rows"], raw["data"]["sha1"])
    return dest


@pytest.fixture(scope="session")
def postgres():
    from servers import Postgres

    server = Postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    from servers import MlflowServer

    server = MlflowServer(postgres.create_database("mlflow"), tmp_path_factory.mktemp("mlflow") / "artifacts")
    yield server
    server.stop()


def cli(*args, cwd, timeout=300, **env):
    """`python -m pipeline ...` in `cwd`, as a user would run it."""
    import sys

    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=run_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
    """A non-zero exit and exactly one line on stderr, naming the problem (each fragment)."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def closed_port_url(path: str = "/airfoil.dat") -> str:
    """An http URL nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}{path}"


def experiment_ids(client) -> list:
    """Every experiment of an MLflow store: a study's trial runs live in one of their own."""
    return [e.experiment_id for e in client.search_experiments()]


def read_csv(path) -> list:
    """The rows of a CSV output (trials.csv, timings.csv, ...) as dicts."""
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))
