"""`study` stage: one seeded Optuna study per problem, optimizer and schedule, every trial mirrored to MLflow.

Read in this order:
  trials.py   the ask-and-tell loop over the budget, and a trial's life from ask to tell to its sink
  search.py   what a trial computes: sampler, objective, and the study's name
  storage.py  the Optuna storage (journal file or RDB) and trials whose worker is gone
  mirror.py   the study as people see it: its labels (MLflow run name, optuna-dashboard identity)
              and the sink: each finished trial into MLflow exactly once, the study's parent run
  outputs.py  trials.csv, best.json, metrics.json, timings.csv, and the study's MLflow summary
and, below, the helper processes of `--workers N`.

Nothing here imports TensorFlow at import time: `run` starts MLflow's process first so that
its start-up overlaps TensorFlow's.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.core import data, paths, problems
from pipeline.core.config import Params
from pipeline.core.masking import mask_url


def run(optimizer: str, params: Params, storage_url: str, tracking_uri: str, workers: int, helper: bool,
        params_file, progress: bool, tags: dict):
    """Run this process's share of the study (with workers - 1 helpers), then, unless it is a
    helper, write the outputs. Returns (study, outcome, timings); outcome is None for a helper."""
    from pipeline.core import tracking
    from pipeline.stages.study import storage

    # Everything that can fail is checked before anything is written: a storage server first,
    # then tracking, and only then the journal file (created on open).
    open_store = lambda: storage.open_storage(storage_url, params.study)  # noqa: E731
    store = None if storage_url == storage.JOURNAL else open_store()
    dataset = problems.get(params.problem).data(data.load_prepared())
    with tracking.Tracker(tracking_uri, params.mlflow.experiment) as tracker:  # starts MLflow's process
        helpers = []
        if workers > 1:  # helpers start once the stores are known to work, then import TensorFlow beside us
            tracker.ready()
            store = store or open_store()
            helpers = spawn_helpers(optimizer, params, workers - 1, storage_url, params_file)
        try:
            from pipeline.stages.study import outputs  # TensorFlow, while MLflow's process starts

            tracker.ready()
            store = store or open_store()
        except BaseException:
            stop_helpers(helpers)
            raise
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one summary line per study, not per trial
        tags = {**tags, "storage": mask_url(storage_url)}
        study, sink, timings = run_with(tracker, optimizer, params, dataset, store, tags, progress, helpers)
        if sink.lost:
            sink.report_waiting(study)
        if helper:
            return study, None, timings  # the worker that started it writes the outputs
        outcome = outputs.write_outputs(study, optimizer, params,
                                        paths.study_dir(params.problem, optimizer, params.schedule), timings)
        if not sink.lost:
            outputs.log_study_summary(tracker, sink.parent_id, study, optimizer, outcome, params)
    return study, outcome, timings


def run_with(tracker, optimizer: str, params: Params, dataset, store, tags: dict, progress: bool = False,
             helpers: list = ()) -> tuple:
    """(study, its MLflow mirror, this worker's timings): the study opened or joined, its mirror
    attached (parent run, dead workers' trials), and this worker's share of the budget run."""
    from pipeline.stages.study import mirror, trials

    try:
        study, created = trials.open_study(optimizer, params, dataset, store)
        sink = mirror.Mirror.attach(tracker, study, created, optimizer, params, tags)
        return study, sink, trials.run_study(study, optimizer, params, dataset, store, sink, progress, helpers)
    except BaseException:
        stop_helpers(helpers)
        raise


# --- helper processes for `--workers N` ------------------------------------------------------
# Helpers are plain study workers (`study <optimizer> --worker`) on the same storage and tracking
# server; Optuna hands each its own trials. They are started as soon as the storage and tracking
# checks pass, so their start-up (TensorFlow's import) overlaps ours, and they get our Ctrl-C.


def spawn_helpers(optimizer: str, params: Params, n: int, storage_url: str, params_file: Path) -> list:
    """n helper workers. The storage URL travels in the environment, so a password in it never
    shows in the process list."""
    env = {**os.environ, "OPTUNA_STORAGE": storage_url}
    cmd = [sys.executable, "-m", "pipeline", "--params", str(params_file), "study", optimizer, "--problem", params.problem,
           "--schedule", params.schedule, "--worker"]
    return [subprocess.Popen(cmd, env=env) for _ in range(n)]


def stop_helpers(helpers: list, timeout: float = 30.0) -> None:
    """Pass an interrupt on to the helpers and wait for them to record their trials."""
    for h in helpers:
        if h.poll() is None:
            h.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    for h in helpers:
        try:
            h.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            h.kill()
            h.wait()
