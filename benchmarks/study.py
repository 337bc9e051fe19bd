"""Time per study trial, split into training, Optuna storage/sampling and MLflow logging.

    python benchmarks/study.py [--trials 100] [--optimizer rmsprop]     (after `dvc repro prepare`)

Runs one real study (default journal storage, SQLite MLflow store) in a temporary directory, so
nothing in the project is touched. Target: at most 40 ms per trial in all.
"""
import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

from pipeline import config, data, study, tracking
from pipeline import storage as study_storage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--optimizer", default="rmsprop")
    args = parser.parse_args()
    params, dataset = config.load_params(), data.load_prepared()
    params = dataclasses.replace(params, study=dataclasses.replace(params.study, n_trials=args.trials))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        storage = study_storage.open_storage("journal", args.optimizer, params.study, root)
        with tracking.Tracker(f"sqlite:///{root}/mlflow.db", "benchmark") as tracker:
            _, _, timings = study.run_study(args.optimizer, params, dataset, storage, tracker, {})
    steady = timings[1:]  # trial 0 includes XLA compilation
    print(f"{args.optimizer}: {len(timings)} trials, journal storage, SQLite MLflow store")
    print(f"{'part':<10}{'median ms':>12}{'mean ms':>10}{'share':>8}")
    total = statistics.mean(t["total"] for t in steady)
    for part in ("train", "optuna", "mlflow", "total"):
        values = [t[part] for t in steady]
        print(f"{part:<10}{1000 * statistics.median(values):>12.2f}{1000 * statistics.mean(values):>10.2f}"
              f"{statistics.mean(values) / total:>8.0%}")
    first, last = steady[:10], steady[-10:]
    print(f"optuna ms, trials 1-10 vs last 10: {1000 * statistics.mean(t['optuna'] for t in first):.2f} vs "
          f"{1000 * statistics.mean(t['optuna'] for t in last):.2f} (TPE reads every past trial)")
    print(f"first trial (with XLA compile): {1000 * timings[0]['total']:.0f} ms; target <= 40 ms per trial: "
          f"{1000 * total:.1f} ms mean")


if __name__ == "__main__":
    main()
