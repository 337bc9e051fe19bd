"""The prepared data set, as the engine and every stage after `prepare` see it."""
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.paths import PREPARED_DIR

ARRAYS_FILE = "airfoil.npz"
STATS_FILE = "stats.json"


class Dataset(NamedTuple):
    features: np.ndarray  # (n, 5) float32, standardized
    target: np.ndarray  # (n,) float32, standardized sound pressure level
    stats: dict  # stats.json: rows, column means/stds, least-squares floor


def load_prepared(prepared_dir: Path = PREPARED_DIR) -> Dataset:
    prepared_dir = Path(prepared_dir)
    try:
        with np.load(prepared_dir / ARRAYS_FILE) as arrays:
            features, target = arrays["features"], arrays["target"]
        stats = json.loads((prepared_dir / STATS_FILE).read_text())
    except FileNotFoundError as e:
        raise PipelineError(
            f"prepared data not found ({e.filename}): run `dvc repro prepare` first"
        ) from None
    return Dataset(features, target, stats)
