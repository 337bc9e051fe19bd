"""What the evaluation reads of the study stage: one study's best.json and trials.csv."""
import csv
import json
from pathlib import Path

from pipeline.core import paths
from pipeline.core.errors import PipelineError


def read_study(problem: str, optimizer: str, studies_dir: Path, schedule: str = "constant") -> tuple:
    """best.json and trials.csv of one study."""
    folder = paths.study_dir(problem, optimizer, schedule, studies_dir)
    try:
        best = json.loads((folder / "best.json").read_text())
        with open(folder / "trials.csv") as f:
            trials = list(csv.DictReader(f))
    except FileNotFoundError as e:
        raise PipelineError(f"{e.filename} not found: run "
                            f"`dvc repro {paths.study_stage(problem, optimizer, schedule)}` first") from None
    return best, trials
