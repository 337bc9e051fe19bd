"""`prepare` stage: check the raw file's SHA-1, parse and validate it, standardize, keep the first n rows.

Writes data/prepared/airfoil.npz (features, target) and stats.json, including the least-squares
optimum of the training loss: the floor every optimizer approaches.
"""
import hashlib
import math
from pathlib import Path

import numpy as np

from pipeline.core import fileio
from pipeline.core.data import ARRAYS_FILE, STATS_FILE
from pipeline.core.errors import PipelineError

COLUMNS = (
    "frequency",
    "angle of attack",
    "chord length",
    "free-stream velocity",
    "suction-side displacement thickness",
    "sound pressure level",
)


def parse_airfoil(raw: bytes, source: str = "airfoil file") -> np.ndarray:
    """Tab-separated, CRLF or LF, no header, 6 finite numeric columns -> (rows, 6) float64."""
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise PipelineError(f"{source} is empty: delete it and rerun `dvc repro download`")
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if len(fields) != len(COLUMNS):
            raise PipelineError(
                f"{source} line {number}: expected {len(COLUMNS)} tab-separated columns, found "
                f"{len(fields)}: is this the airfoil self-noise file?"
            )
        row = []
        for column, field in enumerate(fields, start=1):
            try:
                value = float(field)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value):
                raise PipelineError(
                    f"{source} line {number}, column {column} ({COLUMNS[column - 1]}): "
                    f"{field.strip()[:20]!r} is not a finite number: fix or re-download the file"
                )
            row.append(value)
        rows.append(row)
    return np.array(rows, dtype=np.float64)


def standardize(table: np.ndarray):
    """Zero mean, unit population std per column, over all rows (as the book does)."""
    means, stds = table.mean(axis=0), table.std(axis=0)
    if (stds == 0).any():
        column = COLUMNS[int(np.argmax(stds == 0))]
        raise PipelineError(f"column {column!r} is constant, so it cannot be standardized")
    return (table - means) / stds, means, stds


def least_squares_floor(features: np.ndarray, target: np.ndarray) -> dict:
    """The minimum of mean((X w + b - y)^2) / 2: no optimizer can go below it."""
    xs = np.concatenate([features, np.ones((len(target), 1))], axis=1).astype(np.float64)
    theta, *_ = np.linalg.lstsq(xs, target.astype(np.float64), rcond=None)
    residual = xs @ theta - target
    return {"loss": float(0.5 * np.mean(residual**2)), "w": theta[:-1].tolist(), "b": float(theta[-1])}


def prepare(raw_path: Path, out_dir: Path, n_rows: int, sha1: str) -> dict:
    """Check raw_path against its SHA-1, validate it, write the first n_rows standardized rows and
    stats.json to out_dir."""
    raw_path, out_dir = Path(raw_path), Path(out_dir)
    try:
        raw = raw_path.read_bytes()
    except FileNotFoundError:
        raise PipelineError(f"{raw_path} not found: run `dvc repro download` first") from None
    found = hashlib.sha1(raw).hexdigest()
    if found != sha1.lower():  # an edited file that still parses would change every number silently
        raise PipelineError(f"{raw_path}: SHA-1 mismatch, expected {sha1.lower()}, found {found}: "
                            f"delete it and rerun `dvc repro download` (or fix data.sha1 in params.yaml)")
    table = parse_airfoil(raw, str(raw_path))
    if len(table) < n_rows:
        raise PipelineError(
            f"{raw_path} has {len(table)} rows, fewer than data.n_rows = {n_rows}: "
            f"lower data.n_rows in params.yaml or re-download the file"
        )
    scaled, means, stds = standardize(table)
    # Standardize in float64 (the book uses float32; the difference is below 1e-6), train in float32.
    features = scaled[:n_rows, :-1].astype(np.float32)
    target = scaled[:n_rows, -1].astype(np.float32)
    stats = {
        "rows_in_file": len(table),
        "rows": n_rows,
        "columns": list(COLUMNS),
        "means": means.tolist(),
        "stds": stds.tolist(),
        "least_squares": least_squares_floor(features, target),
    }
    with fileio.atomic_path(out_dir / ARRAYS_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, features=features, target=target)
    fileio.write_json(out_dir / STATS_FILE, stats)
    return stats
