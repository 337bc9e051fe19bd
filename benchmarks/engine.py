"""Engine speed against the book's eager loop, both measured in this one process.

    python benchmarks/engine.py [--repeats N]     (after `dvc repro prepare`)

Prints medians and the two ratios issue 2 asks for: one configuration against the eager loop
(target >= 200x) and microseconds per configuration at K = 1024 (target <= 25 us).
"""
import argparse
import platform
import statistics
import time

import numpy as np

from pipeline import config, data, engine, reference


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: compilation and caches are not what we measure
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    params, dataset = config.load_params(), data.load_prepared()
    protocol, hyper = params.train, {"lr": 0.01, "gamma": 0.9}

    eager = median_time(lambda: reference.train_eager(dataset, "rmsprop", hyper, 0, protocol), max(1, args.repeats // 2))
    single = median_time(lambda: engine.train(dataset, "rmsprop", hyper, [0], protocol), args.repeats * 4)
    rows = [("book eager loop, 1 config", eager, 1), ("engine, K = 1", single, 1)]
    for k in (64, 1024, 8192):
        # A learning-rate x gamma grid over 4 seeds: the shape of the studies, evaluation and grids.
        grid = {"lr": np.geomspace(1e-4, 1.0, k), "gamma": np.linspace(0.5, 0.999, k)}
        seeds = np.arange(k) % 4
        rows.append((f"engine, K = {k}", median_time(lambda: engine.train(dataset, "rmsprop", grid, seeds, protocol), args.repeats), k))

    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    print(f"{'case':<28}{'median s':>12}{'us / config':>14}{'x eager (per config)':>24}")
    for name, seconds, k in rows:
        print(f"{name:<28}{seconds:>12.5f}{seconds / k * 1e6:>14.1f}{eager / (seconds / k):>24.0f}")
    per_config_1024 = next(s / k for n, s, k in rows if k == 1024) * 1e6
    print(f"\none configuration: {eager / single:.0f}x faster than the eager loop (target >= 200x)")
    print(f"K = 1024: {per_config_1024:.1f} us per configuration (target <= 25 us)")


if __name__ == "__main__":
    main()
