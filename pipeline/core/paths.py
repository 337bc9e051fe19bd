"""Where the stages read and write, relative to the project root; dvc.yaml declares the same.
Kept apart so a stage can name another's outputs without importing it (and TensorFlow)."""
from pathlib import Path

RAW_PATH = Path("data/raw/airfoil_self_noise.dat")
PREPARED_DIR = Path("data/prepared")
STUDIES_DIR = Path("studies")  # studies/<problem>/<optimizer>/<schedule>/ (study_dir), and the journal
EVAL_DIR = Path("reports/evaluation")
SUMMARY = Path("reports/summary.json")
REPORTS = Path("reports")  # report.html, report.pdf, figures/


def study_dir(problem: str, optimizer: str, schedule: str = "constant", root: Path = STUDIES_DIR) -> Path:
    """studies/<problem>/<optimizer>/<schedule>/: one study's trials.csv, best.json, metrics.json, timings.csv."""
    return Path(root) / problem / optimizer / schedule


def study_label(problem: str, optimizer: str, schedule: str = "constant") -> str:
    """A study as people name it (MLflow, optuna-dashboard, the report): `mlp · rmsprop`, and
    `mlp · rmsprop · cosine` for a schedule other than constant, which is no schedule at all."""
    return " · ".join([problem, optimizer] + ([schedule] if schedule != "constant" else []))


def study_stage(problem: str, optimizer: str, schedule: str = "constant") -> str:
    """The study's stage in dvc.yaml's matrix."""
    return f"study@{problem}-{optimizer}-{schedule}"
