"""Engine speed against the book's eager loop, both measured in this one process.

    python benchmarks/engine.py [--repeats N]     (after `dvc repro prepare`)

Prints medians and the two ratios issue 2 asks for: one configuration against the eager loop
(target >= 200x) and microseconds per configuration at K = 1024 (target <= 25 us).
benchmarks/run.py uses measure() for its engine table.
"""
import argparse
import platform
import statistics
import time

import numpy as np

from pipeline.core import config, data, engine, reference

KS = (1, 4, 16, 64, 256, 1024, 4096, 8192)


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: compilation and caches are not what we measure
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(dataset, protocol, repeats: int, ks=KS) -> dict:
    """The book's eager loop once, then the engine on an lr x gamma grid over 4 seeds (the shape
    of the studies, evaluation and grids) for each K."""
    hyper = {"lr": 0.01, "gamma": 0.9}
    eager = median_time(lambda: reference.train_eager(dataset, "linreg", "rmsprop", hyper, 0, protocol), max(1, repeats // 2))
    rows = []
    for k in ks:
        grid = {"lr": np.geomspace(1e-4, 1.0, k), "gamma": np.linspace(0.5, 0.999, k)}
        t = median_time(lambda: engine.train(dataset, "rmsprop", grid, np.arange(k) % 4, protocol, "linreg"),
                        repeats * (4 if k == 1 else 1))
        rows.append({"K": k, "seconds": t, "us_per_config": t / k * 1e6, "speedup_per_config": eager / (t / k)})
    return {"eager_seconds": eager, "rows": rows}


NETWORK_KS = (1, 3, 64, 256)  # one configuration, one study trial (3 seeds), an evaluation batch, a grid


def measure_network(dataset, params, repeats: int, ks=NETWORK_KS) -> list:
    """The network problem (5-64-64-1 tanh, its protocol in params.yaml: batch 10, 1500 steps) with RMSProp:
    milliseconds per configuration for each K, lr spread over a grid, seeds 0..3."""
    from pipeline.core import config

    mlp = config.protocol(params, "mlp")
    rows = []
    for k in ks:
        hyper = {"lr": np.geomspace(1e-3, 1e-2, k), "gamma": np.full(k, 0.9)}
        t = median_time(lambda: engine.train(dataset, "rmsprop", hyper, np.arange(k) % 4, mlp, "mlp"), repeats)
        rows.append({"K": k, "seconds": t, "ms_per_config": t / k * 1e3, "configs_per_s": k / t})
    return rows


def measure_schedules(dataset, params, repeats: int, k: int = 1024) -> list:
    """RMSProp at K configurations (the lr x gamma grid of measure) at a constant rate and with cosine
    decay after a warmup, alternating repeat by repeat so both meet the same machine load: the median
    seconds of each, and the linear model at K = 64 on the network's protocol as a second point."""
    from pipeline.core import config

    protocol = params.train
    cases = [("linreg", protocol, k), ("mlp", config.protocol(params, "mlp"), 64)]
    rows = []
    for problem, proto, size in cases:
        grid = {"lr": np.geomspace(1e-4, 1e-2, size), "gamma": np.linspace(0.5, 0.999, size),
                "final": 0.01, "warmup": 0.1}
        runs = {s: (lambda s=s: engine.train(dataset, "rmsprop", grid, np.arange(size) % 4, proto, problem, s))
                for s in ("constant", "warmup_cosine")}
        times = {s: [] for s in runs}
        for fn in runs.values():
            fn()  # compile
        for i in range(repeats):  # alternating, and which goes first too: no order bias
            for s, fn in (list(runs.items()) if i % 2 == 0 else list(runs.items())[::-1]):
                start = time.perf_counter()
                fn()
                times[s].append(time.perf_counter() - start)
        medians = {s: statistics.median(t) for s, t in times.items()}
        rows.append({"problem": problem, "K": size, **{f"{s}_s": v for s, v in medians.items()},
                     "ratio": medians["warmup_cosine"] / medians["constant"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--network", action="store_true", help="the network problem's engine instead")
    args = parser.parse_args()
    params, dataset = config.load_params(), data.load_prepared()
    if args.network:
        print(f"{'network 5-64-64-1, RMSProp, 1500 steps':<40}{'median s':>10}{'ms / config':>13}{'configs / s':>13}")
        for r in measure_network(dataset, params, args.repeats):
            print(f"{'K = ' + str(r['K']):<40}{r['seconds']:>10.3f}{r['ms_per_config']:>13.1f}{r['configs_per_s']:>13.1f}")
        return
    result = measure(dataset, params.train, args.repeats)
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    print(f"{'case':<28}{'median s':>12}{'us / config':>14}{'x eager (per config)':>24}")
    print(f"{'book eager loop, K = 1':<28}{result['eager_seconds']:>12.5f}{result['eager_seconds'] * 1e6:>14.1f}{1:>24}")
    for r in result["rows"]:
        print(f"{'engine, K = ' + str(r['K']):<28}{r['seconds']:>12.5f}{r['us_per_config']:>14.1f}"
              f"{r['speedup_per_config']:>24.0f}")
    by_k = {r["K"]: r for r in result["rows"]}
    print(f"\none configuration: {by_k[1]['speedup_per_config']:.0f}x faster than the eager loop (target >= 200x)")
    print(f"K = 1024: {by_k[1024]['us_per_config']:.1f} us per configuration (target <= 25 us)")


if __name__ == "__main__":
    main()
