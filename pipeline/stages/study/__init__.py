"""`study` stage: one seeded Optuna study per optimizer, every trial mirrored to MLflow.

Read in this order:
  trials.py   the ask-and-tell loop over the budget, and a trial's life from ask to tell to its sink
  search.py   what a trial computes: sampler, objective, and the study's name
  labels.py   how a study is shown to people: MLflow run name, Optuna user attributes
  storage.py  the Optuna storage (journal file or RDB) and trials whose worker is gone
  mirror.py   the sink: each finished trial into MLflow exactly once, the study's parent run
  outputs.py  trials.csv, best.json, metrics.json, timings.csv, and the study's MLflow summary
  workers.py  helper processes for `--workers N`

Nothing here imports TensorFlow at import time: `run` starts MLflow's process first so that
its start-up overlaps TensorFlow's.
"""
from pipeline.core import data
from pipeline.core.config import Params, mask_url


def run(optimizer: str, params: Params, storage_url: str, tracking_uri: str, workers: int, helper: bool,
        params_file, progress: bool, tags: dict):
    """Run this process's share of the study (with workers - 1 helpers), then, unless it is a
    helper, write the outputs. Returns (study, outcome, timings); outcome is None for a helper."""
    from pipeline.core import tracking
    from pipeline.stages.study import storage
    from pipeline.stages.study import workers as worker_processes

    # Everything that can fail is checked before anything is written: a storage server first,
    # then tracking, and only then the journal file (created on open).
    open_store = lambda: storage.open_storage(storage_url, optimizer, params.study)  # noqa: E731
    store = None if storage_url == storage.JOURNAL else open_store()
    dataset = data.load_prepared()
    with tracking.Tracker(tracking_uri, params.mlflow.experiment) as tracker:  # starts MLflow's process
        helpers = []
        if workers > 1:  # helpers start once the stores are known to work, then import TensorFlow beside us
            tracker.ready()
            store = store or open_store()
            helpers = worker_processes.spawn(optimizer, params.problem, workers - 1, storage_url, params_file)
        try:
            from pipeline.stages.study import outputs  # TensorFlow, while MLflow's process starts

            tracker.ready()
            store = store or open_store()
        except BaseException:
            worker_processes.stop(helpers)
            raise
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one summary line per study, not per trial
        tags = {**tags, "storage": mask_url(storage_url)}
        study, sink, timings = run_with(tracker, optimizer, params, dataset, store, tags, progress, helpers)
        if sink.lost:
            sink.report_waiting(study)
        if helper:
            return study, None, timings  # the worker that started it writes the outputs
        outcome = outputs.write_outputs(study, optimizer, params, storage.study_dir(params.problem, optimizer), timings)
        if not sink.lost:
            outputs.log_study_summary(tracker, sink.parent_id, study, optimizer, outcome, params)
    return study, outcome, timings


def run_with(tracker, optimizer: str, params: Params, dataset, store, tags: dict, progress: bool = False,
             helpers: list = ()) -> tuple:
    """(study, its MLflow mirror, this worker's timings): the study opened or joined, its mirror
    attached (parent run, dead workers' trials), and this worker's share of the budget run."""
    from pipeline.stages.study import mirror, trials
    from pipeline.stages.study import workers as worker_processes

    try:
        study, created = trials.open_study(optimizer, params, dataset, store)
        sink = mirror.Mirror.attach(tracker, study, created, optimizer, params, tags)
    except BaseException:
        worker_processes.stop(helpers)
        raise
    return study, sink, trials.run_study(study, optimizer, params, dataset, store, sink, progress, helpers)
