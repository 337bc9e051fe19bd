"""Every speed figure of the project in one run: engine, study trials, scaling, the whole pipeline.

    python benchmarks/run.py [--quick]        (from the project root, after `make repro`)

Writes benchmarks/results.md and benchmarks/results.json: machine, versions, medians over repeats,
ratios. --quick shrinks every size for a sanity run (under a minute); its figures are not targets.
The pipeline part clones the committed project into a temporary directory, so uncommitted edits are
not measured; AIRFOIL_MIRROR must be set on machines without internet.
"""
import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import engine as engine_bench  # noqa: E402  benchmarks/engine.py
from pipeline.core import config, data, optimizers, paths, tracking  # noqa: E402
from pipeline.stages import study  # noqa: E402
from pipeline.stages.study import storage as study_storage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) // 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mib": mem, "python": platform.python_version(),
            **{p: metadata.version(p) for p in ("tensorflow-cpu", "optuna", "mlflow", "dvc", "numpy")}}


def bench_study(ds, params, n_trials, seeds_per_trial=3, problem="linreg"):
    p = dataclasses.replace(config.for_problem(params, problem), study=dataclasses.replace(
        params.study, n_trials=n_trials, seeds_per_trial=seeds_per_trial))
    with tempfile.TemporaryDirectory() as tmp:
        storage = study_storage.open_storage("journal", p.study, Path(tmp))
        start = time.perf_counter()
        with tracking.Tracker(f"sqlite:///{tmp}/mlflow.db", "benchmark") as tracker:
            _, _, timings = study.run_with(tracker, "rmsprop", p, ds, storage, {})
        wall = time.perf_counter() - start
    steady = timings[1:] or timings
    parts = {k: 1000 * statistics.mean(t[k] for t in steady)
             for k in ("train", "optuna", "mlflow", "total", "mlflow_background")}
    tail = steady[-min(10, len(steady)):]
    return {"trials": n_trials, "seeds": seeds_per_trial, "wall_s": wall, **{f"{k}_ms": v for k, v in parts.items()},
            "median_total_ms": 1000 * statistics.median(t["total"] for t in steady),
            "last10_optuna_ms": 1000 * statistics.mean(t["optuna"] for t in tail),
            "last10_total_ms": 1000 * statistics.mean(t["total"] for t in tail)}


# Measures through a small interpreter: a child forked straight from this process (TensorFlow
# loaded) would inherit its high-water RSS mark and report it as its own.
_MEASURE = ("import os, subprocess, sys\n"
            "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "_, status, usage = os.wait4(p.pid, 0)\n"
            "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)")


def run_measured(cmd, cwd, env):
    """Wall seconds and peak RSS (MiB) of a command and everything it starts."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    code, maxrss_kib = map(int, out.stdout.split())
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd} (exit {code}); rerun it there to see why")
    return seconds, maxrss_kib / 1024


def fresh_clone(tmp: Path, name: str, params_edit=None) -> Path:
    dest = tmp / name
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    if params_edit:
        import yaml
        raw = yaml.safe_load((dest / "params.yaml").read_text())
        params_edit(raw)
        (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


def bench_samplers(ds, params, optimizer_names):
    """The evaluation's sampler comparison alone (4 samplers x evaluate.sampler_repeats seeds x
    study.n_trials trials per optimizer), against each study's budget of trials."""
    from pipeline.stages.evaluate import samplers
    rows = []
    for name in optimizer_names:
        start = time.perf_counter()
        samplers.compare(ds, name, params, penalty=1.0)
        rows.append({"optimizer": name, "seconds": time.perf_counter() - start})
    return rows


def bench_pipeline(quick: bool, repeats: int):
    """Cold `dvc repro` in fresh clones (median of `repeats`), a no-op rerun, and each stage alone."""
    env = _repro_env()

    def shrink(raw):
        if quick:
            raw["study"]["n_trials"] = 10
            raw["evaluate"].update(seeds=3, framework_seeds=1, lr_points=16, grid_points=8, cube_points=6)

    def chapter(raw):
        shrink(raw)
        raw["study"]["optimizers"] = sorted(optimizers.OPTIMIZERS)

    def linreg_only(raw):
        shrink(raw)
        raw["study"]["problems"] = ["linreg"]

    with tempfile.TemporaryDirectory() as tmp:
        cold, whole_chapter, linreg = [], [], []
        for i in range(repeats):  # the default beside linear regression only, alternating: the 2x budget
            linreg.append(run_measured(["dvc", "repro"], fresh_clone(Path(tmp), f"linreg{i}", linreg_only), env))
            whole = fresh_clone(Path(tmp), f"whole{i}", shrink)
            cold.append(run_measured(["dvc", "repro"], whole, env))
        for i in range(repeats):  # the whole chapter: 7 optimizers, defaults otherwise
            whole_chapter.append(run_measured(["dvc", "repro"], fresh_clone(Path(tmp), f"chapter{i}", chapter), env))
        noop = [run_measured(["dvc", "repro"], whole, env)[0] for _ in range(3)]
        staged = fresh_clone(Path(tmp), "staged", chapter)
        stages = ["download", "prepare", *[paths.study_stage(p, o) for p in params_problems(staged)
                                           for o in sorted(optimizers.OPTIMIZERS)], "evaluate", "report"]
        per_stage = []
        for name in stages:
            seconds, rss = run_measured(["dvc", "repro", "--single-item", name], staged, env)
            per_stage.append({"stage": name, "seconds": seconds, "peak_rss_mib": rss})
    seconds = [c[0] for c in cold]
    chapter_seconds = [c[0] for c in whole_chapter]
    return {"cold_seconds": statistics.median(seconds), "cold_runs": seconds,
            "linreg_seconds": statistics.median(c[0] for c in linreg), "linreg_runs": [c[0] for c in linreg],
            "chapter_seconds": statistics.median(chapter_seconds), "chapter_runs": chapter_seconds,
            "cold_peak_rss_mib": max(c[1] for c in cold + whole_chapter), "noop_seconds": statistics.median(noop),
            "stages": per_stage}


def params_problems(root: Path) -> list:
    return config.load_params(root / "params.yaml").study.problems


def bench_schedules(repeats: int) -> str:
    """Schedules' cost: the engine with cosine-with-warmup against a constant rate, side by side, and
    cold `dvc repro` with study.schedules [constant, cosine, warmup_cosine] against the default."""
    params, ds = config.load_params(ROOT / "params.yaml"), data.load_prepared(ROOT / "data/prepared")
    lines = ["| engine, RMSProp | constant | cosine with warmup | ratio |", "| --- | --- | --- | --- |"]
    for r in engine_bench.measure_schedules(ds, params, max(repeats, 7)):
        lines.append(f"| {r['problem']}, K = {r['K']} | {1000 * r['constant_s']:.2f} ms | "
                     f"{1000 * r['warmup_cosine_s']:.2f} ms | {r['ratio']:.3f}x |")
    env = _repro_env()
    three = lambda raw: raw["study"].update(schedules=["constant", "cosine", "warmup_cosine"])  # noqa: E731
    runs = {"default (constant)": (None, []), "schedules [constant, cosine, warmup_cosine]": (three, [])}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for j, (name, (edit, times)) in enumerate(runs.items()):
                times.append(run_measured(["dvc", "repro"], fresh_clone(Path(tmp), f"run{i}_{j}", edit), env)[0])
    base = statistics.median(runs["default (constant)"][1])
    lines += ["", "| cold `dvc repro` | median (runs) | over the default |", "| --- | --- | --- |"]
    lines += [f"| {name} | {statistics.median(t):.1f} s ({', '.join(f'{x:.1f}' for x in t)}) | "
              f"{statistics.median(t) / base:.2f}x |" for name, (_, t) in runs.items()]
    return "\n".join(lines)


def markdown(r: dict) -> str:
    m, e = r["machine"], r["engine"]
    k1 = next(x for x in e["rows"] if x["K"] == 1)
    k1024 = next((x for x in e["rows"] if x["K"] == 1024), None)
    lines = [f"# Benchmark results{' (--quick: not the targets)' if r['quick'] else ''}", "",
             f"{m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB; Python {m['python']}, TensorFlow "
             f"{m['tensorflow-cpu']}, Optuna {m['optuna']}, MLflow {m['mlflow']}, DVC {m['dvc']}. {r['date']}.", "",
             "## Targets", "", "| target | measured |", "| --- | --- |",
             f"| cold `dvc repro`, default (SGD, Adagrad, RMSProp; linreg and mlp) <= 2x linear regression only | "
             f"{r['pipeline']['cold_seconds']:.1f} s (median of {', '.join(f'{x:.1f}' for x in r['pipeline']['cold_runs'])}"
             f") against {r['pipeline']['linreg_seconds']:.1f} s ({', '.join(f'{x:.1f}' for x in r['pipeline']['linreg_runs'])}"
             f"), alternating: {r['pipeline']['cold_seconds'] / r['pipeline']['linreg_seconds']:.2f}x |",
             f"| cold `dvc repro`, whole chapter (7 optimizers), both problems | {r['pipeline']['chapter_seconds']:.1f} s "
             f"(median of {', '.join(f'{x:.1f}' for x in r['pipeline']['chapter_runs'])}; "
             f"{r['pipeline']['chapter_seconds'] / r['pipeline']['cold_seconds']:.2f}x the default) |",
             f"| peak memory of any stage <= 2 GiB | {r['pipeline']['cold_peak_rss_mib']:.0f} MiB |",
             f"| no-op `dvc repro` <= 3 s | {r['pipeline']['noop_seconds']:.2f} s |",
             f"| study trial <= 25 ms mean (100 trials) | {r['study_default']['total_ms']:.1f} ms mean, "
             f"{r['study_default']['median_total_ms']:.1f} median (train {r['study_default']['train_ms']:.1f}, "
             f"Optuna {r['study_default']['optuna_ms']:.1f}, waiting on MLflow {r['study_default']['mlflow_ms']:.1f}; "
             f"MLflow's own process {r['study_default']['mlflow_background_ms']:.1f} per run beside them) |",
             f"| engine K = 1 >= 200x the eager loop | {e['eager_seconds'] / k1['seconds']:.0f}x "
             f"({1000 * k1['seconds']:.2f} ms vs {e['eager_seconds']:.2f} s) |"]
    if k1024:
        lines.append(f"| engine K = 1024 <= 25 us per config | {k1024['us_per_config']:.1f} us "
                     f"({k1024['speedup_per_config']:.0f}x the eager loop per config) |")
    default = [x["seconds"] for x in r["samplers"] if x["optimizer"] in ("sgd", "adagrad", "rmsprop")]
    lines.insert(lines.index("## Targets") + 6, f"| sampler comparison (default optimizers) <= 15 s | {sum(default):.1f} s "
                 f"(whole chapter {sum(x['seconds'] for x in r['samplers']):.1f} s: "
                 + ", ".join(f"{x['optimizer']} {x['seconds']:.1f}" for x in r["samplers"]) + ") |")
    lines += ["", "## Pipeline stages, whole chapter (each in its own `dvc repro --single-item`, cold)", "",
              "| stage | seconds | peak RSS MiB |", "| --- | --- | --- |",
              *[f"| {s['stage']} | {s['seconds']:.1f} | {s['peak_rss_mib']:.0f} |" for s in r["pipeline"]["stages"]],
              "", "## Engine: time against K (lr x gamma grid, 4 seeds)", "",
              "| K | median ms | us per config | x eager per config |", "| --- | --- | --- | --- |",
              *[f"| {x['K']} | {1000 * x['seconds']:.2f} | {x['us_per_config']:.1f} | {x['speedup_per_config']:.0f} |"
                for x in e["rows"]],
              "", "## Study: time against the number of trials (RMSProp, 3 seeds per trial)", "",
              "| trials | wall s | ms / trial | train | Optuna | waiting on MLflow | MLflow process per run "
              "| Optuna, last 10 trials |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |",
              *[f"| {s['trials']} | {s['wall_s']:.1f} | {s['total_ms']:.1f} | {s['train_ms']:.2f} | {s['optuna_ms']:.2f} "
                f"| {s['mlflow_ms']:.2f} | {s['mlflow_background_ms']:.2f} | {s['last10_optuna_ms']:.2f} |"
                for s in r["study_trials"]],
              "", "## Study: time against seeds per trial (RMSProp, 50 trials)", "",
              "| seeds | ms / trial | train ms |", "| --- | --- | --- |",
              *[f"| {s['seeds']} | {s['total_ms']:.1f} | {s['train_ms']:.2f} |" for s in r["study_seeds"]],
              "", "## The network problem (RMSProp, batch 10, 1500 steps; JAX reference: 59, 39, 52, 66 ms)", "",
              "| K | ms per configuration | configurations per second |", "| --- | --- | --- |",
              *[f"| {x['K']} | {x['ms_per_config']:.1f} | {x['configs_per_s']:.1f} |" for x in r["network"]],
              "", network_trial_line(r["network_trial"]), ""]
    return "\n".join(lines)


def network_trial_line(s: dict) -> str:
    return (f"Network study trial (3 seeds, mean of trials 2..{s['trials']}): total {s['total_ms']:.0f} ms = training "
            f"{s['train_ms']:.0f} + Optuna {s['optuna_ms']:.1f} + MLflow hand-off {s['mlflow_ms']:.1f} "
            f"(MLflow's own writes, on the other core: {s['mlflow_background_ms']:.1f})")


def _repro_env() -> dict:
    """A clone's `dvc repro` as CI runs it, on its own local stores (not the caller's tracking or storage)."""
    env = {**os.environ, "CI": "true", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("OPTUNA_STORAGE", None)
    return env


def bench_against(baseline: str, repeats: int) -> str:
    """Cold default `dvc repro` of this tree and of commit `baseline`, alternating in fresh clones
    on the same machine, so a change's cost is measured side by side rather than against an old
    figure from a differently loaded day."""
    env = _repro_env()
    times = {baseline: [], "this tree": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            before = fresh_clone(Path(tmp), f"before{i}")
            subprocess.run(["git", "checkout", "-q", baseline], cwd=before, check=True)
            times[baseline].append(run_measured(["dvc", "repro"], before, env)[0])
            times["this tree"].append(run_measured(["dvc", "repro"], fresh_clone(Path(tmp), f"after{i}"), env)[0])
    old, new = statistics.median(times[baseline]), statistics.median(times["this tree"])
    rows = [f"| {name} | {statistics.median(t):.1f} s ({', '.join(f'{x:.1f}' for x in t)}) |" for name, t in times.items()]
    return "\n".join(["| cold default `dvc repro` | median (runs) |", "| --- | --- |", *rows,
                      f"| ratio | {new / old:.2f}x |"])


def bench_problems(repeats: int) -> str:
    """Cold default `dvc repro` (four problems) against the same with each problem alone, and against
    the whole chapter on the default problems, alternating in fresh clones of this commit."""
    env = _repro_env()
    alone = lambda problem: lambda raw: raw["study"].update(problems=[problem])  # noqa: E731
    chapter = lambda raw: raw["study"].update(optimizers=sorted(optimizers.OPTIMIZERS))  # noqa: E731
    runs = {"linear regression only": (alone("linreg"), []), "quadratic_deep only": (alone("quadratic_deep"), []),
            "mlp only": (alone("mlp"), []), "digits only": (alone("digits"), []),
            "default (linreg, quadratic_deep, mlp, digits)": (None, []),
            "whole chapter, the default problems": (chapter, [])}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for j, (name, (edit, times)) in enumerate(runs.items()):
                times.append(run_measured(["dvc", "repro"], fresh_clone(Path(tmp), f"run{i}_{j}", edit), env)[0])
    base = statistics.median(runs["linear regression only"][1])
    rows = [f"| {name} | {statistics.median(t):.1f} s ({', '.join(f'{x:.1f}' for x in t)}) | "
            f"{statistics.median(t) / base:.2f}x |" for name, (_, t) in runs.items()]
    return "\n".join(["| cold `dvc repro` | median (runs) | over linear regression only |", "| --- | --- | --- |", *rows])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", help="only time cold dvc repro of this tree against this commit, side by side")
    parser.add_argument("--repeats", type=int, default=3, help="with --baseline: clones of each (default 3)")
    parser.add_argument("--network", action="store_true", help="only the network engine and its study trials")
    parser.add_argument("--problems", action="store_true",
                        help="only time cold dvc repro with both problems against linear regression only")
    parser.add_argument("--schedules", action="store_true",
                        help="only the schedules' cost: engine side by side, cold dvc repro with three schedules")
    args = parser.parse_args()
    if args.schedules:
        print(bench_schedules(args.repeats))
        return
    if args.problems:
        print(bench_problems(args.repeats))
        return
    if args.network:
        params, ds = config.load_params(ROOT / "params.yaml"), data.load_prepared(ROOT / "data/prepared")
        print("| network engine, RMSProp, 1500 steps | ms per configuration | configurations per second |")
        print("| --- | --- | --- |")
        for r in engine_bench.measure_network(ds, params, args.repeats):
            print(f"| K = {r['K']} | {r['ms_per_config']:.1f} | {r['configs_per_s']:.1f} |")
        print("\n" + network_trial_line(bench_study(ds, params, 30, problem="mlp")))
        return
    if args.baseline:
        print(bench_against(args.baseline, args.repeats))
        return
    params, ds = config.load_params(ROOT / "params.yaml"), data.load_prepared(ROOT / "data/prepared")
    q = args.quick
    results = {"quick": q, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine()}
    print("engine ...", flush=True)
    results["engine"] = engine_bench.measure(ds, params.train, 2 if q else 7, [1, 64, 1024] if q else engine_bench.KS)
    print("study trials ...", flush=True)
    results["study_trials"] = [bench_study(ds, params, n) for n in ([10, 30] if q else [10, 100, 1000])]
    results["study_default"] = results["study_trials"][-1 if q else 1]
    print("study seeds ...", flush=True)
    results["study_seeds"] = [bench_study(ds, params, 10 if q else 50, s) for s in ([1, 10] if q else [1, 3, 10, 30])]
    print("network ...", flush=True)
    results["network"] = engine_bench.measure_network(ds, params, 2 if q else 3)
    results["network_trial"] = bench_study(ds, params, 10 if q else 30, problem="mlp")
    print("samplers ...", flush=True)
    results["samplers"] = bench_samplers(ds, params, sorted(optimizers.OPTIMIZERS))
    print("pipeline ...", flush=True)
    results["pipeline"] = bench_pipeline(q, 1 if q else 3)
    text = markdown(results)
    suffix = "_quick" if q else ""
    (OUT / f"results{suffix}.md").write_text(text)
    (OUT / f"results{suffix}.json").write_text(json.dumps(results, indent=2))
    print(text)


if __name__ == "__main__":
    main()
