"""Where the stages read and write, relative to the project root; dvc.yaml declares the same.
Kept apart so a stage can name another's outputs without importing it (and TensorFlow)."""
from pathlib import Path

RAW_PATH = Path("data/raw/airfoil_self_noise.dat")
PREPARED_DIR = Path("data/prepared")
STUDIES_DIR = Path("studies")  # studies/<optimizer>/: trials.csv, best.json, metrics.json, the journal
EVAL_DIR = Path("reports/evaluation")
SUMMARY = Path("reports/summary.json")
REPORTS = Path("reports")  # report.html, report.pdf, figures/
