"""`dvc repro` in a fresh copy of the project: the stages run, then nothing is left to do."""
import subprocess

from conftest import run_env


def dvc(*args, cwd):
    return subprocess.run(["dvc", *args], cwd=cwd, env=run_env(), capture_output=True, text=True)


def test_repro_runs_data_stages_then_is_up_to_date(project_copy):
    first = dvc("repro", "prepare", cwd=project_copy)
    assert first.returncode == 0, first.stderr
    assert "Running stage 'download'" in first.stdout and "Running stage 'prepare'" in first.stdout
    assert (project_copy / "data/prepared/stats.json").exists()
    second = dvc("repro", "prepare", cwd=project_copy)
    assert second.returncode == 0, second.stderr
    assert "Running stage" not in second.stdout
    assert dvc("status", "prepare", cwd=project_copy).stdout.strip() == "Data and pipelines are up to date."
