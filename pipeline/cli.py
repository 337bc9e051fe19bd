"""`python -m pipeline <command>`: thin commands over the stage functions. DVC stages call these."""
import json
import os
import sys

import numpy as np

from pipeline import arguments
from pipeline.core import config, data, masking, paths
from pipeline.core.errors import PipelineError


def cmd_download(args, params: config.Params) -> None:
    from pipeline.stages import download

    source = download.download(
        params.data.url,
        params.data.sha1,
        paths.RAW_PATH,
        mirror=os.environ.get(download.MIRROR_ENV) or None,
        timeout=params.data.timeout_s,
        retries=params.data.retries,
    )
    print(f"downloaded {paths.RAW_PATH} from {source} (SHA-1 verified)")


def cmd_prepare(args, params: config.Params) -> None:
    from pipeline.stages import prepare

    stats = prepare.prepare(paths.RAW_PATH, paths.PREPARED_DIR, params.data.n_rows, params.data.sha1)
    floor = stats["least_squares"]["loss"]
    print(f"prepared {stats['rows']} of {stats['rows_in_file']} rows; least-squares floor {floor:.6f}")


def _hyper(args, defaults: dict, where: str) -> dict:
    """Hyperparameters from the flags, falling back to `defaults` (optimizer -> setting, params.yaml's
    `where`: book or evaluate.quadratic)."""
    from pipeline.core import optimizers

    opt = optimizers.get(args.optimizer)
    foreign = [h for h in optimizers.HYPERPARAMETERS if getattr(args, h) is not None and h not in opt.hyperparams]
    if foreign:
        raise PipelineError(f"--{foreign[0]} does not apply to {args.optimizer}: its hyperparameters are "
                            f"{', '.join('--' + h for h in opt.hyperparams)}")
    setting = defaults.get(args.optimizer, {})
    missing = [h for h in opt.hyperparams if getattr(args, h) is None and h not in setting]
    if missing:
        raise PipelineError(f"params.yaml has no {where}.{args.optimizer}: add it, or pass "
                            f"{', '.join('--' + h for h in missing)}")
    return {h: setting[h] if getattr(args, h) is None else getattr(args, h) for h in opt.hyperparams}


def _schedule_settings(args) -> dict:
    """The schedule's settings (fractions of the run) from the flags, else the registry's defaults."""
    from pipeline.core import schedules

    reads = schedules.get(args.schedule).run_settings
    foreign = [s for s in schedules.RUN_SETTINGS if getattr(args, s) is not None and s not in reads]
    if foreign:
        raise PipelineError(f"--{foreign[0]} does not apply to the {args.schedule} schedule: "
                            f"{'it reads ' + ', '.join('--' + s for s in reads) if reads else 'it has no settings'}")
    return {s: schedules.RUN_SETTINGS[s].default if getattr(args, s) is None else getattr(args, s) for s in reads}


def cmd_train(args, params: config.Params) -> None:
    import dataclasses

    from pipeline.core import engine, problems, schedules

    workload = problems.get(args.problem)
    if args.init is not None and not workload.uses_train_init:
        raise PipelineError(f"--init applies to the linear model only: {args.problem} always starts from "
                            f"{workload.init_label(params.train)} weights (pipeline/core/problems.py); drop --init")
    protocol = config.validated(dataclasses.replace, config.protocol(params, args.problem), **{
        k: v for k, v in (("batch_size", args.batch_size), ("epochs", args.epochs), ("init", args.init)) if v is not None})
    hyper = _hyper(args, params.book, "book")
    settings = _schedule_settings(args)
    dataset = workload.data(data.load_prepared())
    n_features = dataset.features.shape[1]
    result = engine.train(dataset, args.optimizer, {**hyper, **settings}, [args.seed], protocol, args.problem,
                          args.schedule)
    diverged = bool(result.diverged[0])
    steps = len(engine.timeline(len(dataset.target), protocol).step_rows)
    factors = schedules.run_factors(args.schedule, tuple((s, float(settings[s])) for s in settings), steps)
    if args.json:
        print(json.dumps({
            "problem": args.problem,
            "architecture": workload.architecture(n_features),
            "data": workload.data_record(dataset),
            "initial_parameters": workload.initial_layers(workload.initial_params(args.seed, n_features, protocol),
                                                          n_features),
            "protocol": dataclasses.asdict(protocol),
            "optimizer": args.optimizer,
            "hyperparameters": hyper,
            "schedule": args.schedule,
            "schedule_settings": settings,
            "schedule_factors": factors.tolist(),  # update t's lr is lr times factor t (Adadelta: its step)
            "seed": args.seed,
            "diverged": diverged,
            "final_loss": None if diverged else float(result.final_loss[0]),
            "examples": result.examples.tolist(),
            "losses": [x if np.isfinite(x) else None for x in result.losses[0].tolist()],
            "effective_lr_columns": list(workload.lr_columns(n_features)),
            "effective_lr": [[x if np.isfinite(x) else None for x in row] for row in result.effective_lr[0].tolist()],
        }))
    elif diverged:
        print("diverged: the loss became inf/NaN (try a smaller --lr)")
    else:
        print(f"loss: {result.final_loss[0]:.6f}")
    if not args.json and args.schedule != "constant":
        print(f"schedule {args.schedule}: the rate times {factors[0]:.4g} at update 0, {factors[steps // 2]:.4g} at "
              f"update {steps // 2}, {factors[-1]:.4g} at update {steps - 1} (--json lists every update's)")


def cmd_quadratic(args, params: config.Params) -> None:
    from pipeline.core import quadratic

    path = quadratic.trace(args.optimizer, _hyper(args, params.evaluate.quadratic, "evaluate.quadratic"), args.steps)
    print(quadratic.book_line(path))
    if args.trace:
        from pipeline.core import fileio

        with fileio.atomic_path(args.trace) as tmp:
            np.savetxt(tmp, np.column_stack([np.arange(len(path)), path, quadratic.f(path)]),
                       delimiter=",", header="step,x1,x2,f", comments="", fmt=["%d", "%.9g", "%.9g", "%.9g"])


def cmd_schedule(args, params: config.Params) -> None:
    from pipeline.core import schedules

    schedule = schedules.get(args.name)
    foreign = [n for n in schedules.SETTINGS if getattr(args, n) is not None and n not in schedule.settings]
    if foreign:
        takes = ", ".join("--" + n.replace("_", "-") for n in schedule.settings) or "only --base-lr and --steps"
        raise PipelineError(f"--{foreign[0].replace('_', '-')} does not apply to the {args.name} schedule: it takes {takes}")
    book = schedule.book
    settings = {n: book[n] if getattr(args, n) is None else getattr(args, n) for n in schedule.settings}
    rates = schedules.values(args.name, args.steps or book["steps"],
                             book["base_lr"] if args.base_lr is None else args.base_lr, settings)
    if args.json:
        print(json.dumps(rates.tolist()))
    else:
        print("\n".join(f"t {t} lr {rate:.6f}" for t, rate in enumerate(rates)))


def git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _tracking_uri() -> str:
    from pipeline.core import tracking

    return os.environ.get("MLFLOW_TRACKING_URI") or tracking.DEFAULT_TRACKING_URI


def _source_tags(params: config.Params) -> dict:
    commit = git_commit()
    return {"git_commit": commit, "mlflow.source.git.commit": commit, "data_sha1": params.data.sha1}


def cmd_study(args, params: config.Params) -> None:
    from pipeline.stages import study

    storage_url = args.storage or os.environ.get("OPTUNA_STORAGE") or params.study.storage
    # A helper (--worker) never starts helpers of its own, whatever study.workers says.
    workers = 1 if args.worker else (args.workers or params.study.workers)
    progress = sys.stderr.isatty() and not os.environ.get("CI") and not args.worker
    params = config.for_problem(params, args.problem, args.schedule)
    result, outcome, timings = study.run(args.optimizer, params, storage_url, _tracking_uri(), workers, args.worker,
                                         args.params, progress, _source_tags(params))
    if outcome is None:
        return
    m = outcome.metrics
    # The median: the mean would carry the first trial's one-off compilation (about a second).
    per_trial = f", {1000 * np.median([t['total'] for t in timings]):.1f} ms/trial (median)" if timings else ""
    extra = f", {m['extra_trials']} extra not counted" if m["extra_trials"] else ""
    print(f"{result.study_name}: best {params.study.objective} {m['best_value']:.6f} "
          f"with {outcome.best_hyperparams}; {m['trials']} trials "
          f"({m['diverged']} diverged, {len(timings)} run by this worker{per_trial}{extra})")


def cmd_evaluate(args, params: config.Params) -> None:
    from pipeline.stages import evaluate

    summary = evaluate.run(params, _tracking_uri())
    number = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    for problem, result in summary["problems"].items():
        for name, s in result["optimizers"].items():
            tuned, book = s["tuned_final_loss"], s["book_final_loss"]
            diverged = f", {tuned['diverged_seeds']} seeds diverged" if tuned["diverged_seeds"] else ""
            print(f"{problem} {name}: tuned {number(tuned['mean'], '.6f')} +/- {number(tuned['ci95'], '.6f')}{diverged} "
                  f"(book {number(book['mean'], '.6f')}), regret {number(s['regret'], '.2e')}, "
                  f"Keras max diff {number(s['keras_max_abs_diff'], '.1e')}")


def cmd_report(args, params: config.Params) -> None:
    from pipeline.stages import report

    captions = report.run(params, _tracking_uri(), git_commit())
    print(f"wrote {paths.REPORTS}/report.html, report.pdf and {len(captions)} figures; logged to MLflow")


def cmd_ui(args, params: config.Params) -> None:
    """MLflow's UI on this pipeline's runs: the summary experiment's training-runs view."""
    from mlflow import MlflowClient

    from pipeline.core import processes, tracking

    uri = _tracking_uri()
    local = tracking.local_store(uri)
    if local is not None and not local.exists():  # MLflow's client would create an empty store
        raise PipelineError(f"no MLflow store at {local}: run `dvc repro` first (or set MLFLOW_TRACKING_URI)")
    found = MlflowClient(uri).get_experiment_by_name(params.mlflow.experiment)
    if found is None:
        raise PipelineError(f"no MLflow experiment {params.mlflow.experiment!r} in {masking.mask_url(uri)}: "
                            f"run `dvc repro` first")
    print(f"open http://{args.host}:{args.port}/#/experiments/{found.experiment_id}?workflowType=machine_learning",
          flush=True)
    if not args.print_url:
        # The store goes through the environment: a password in it stays off the process list.
        processes.serve_until_stopped([sys.executable, "-m", "mlflow", "ui", "--host", args.host, "--port", str(args.port)],
                            env={**os.environ, "MLFLOW_BACKEND_STORE_URI": uri})


COMMANDS = {"download": cmd_download, "prepare": cmd_prepare, "train": cmd_train, "study": cmd_study,
            "evaluate": cmd_evaluate, "report": cmd_report, "ui": cmd_ui, "quadratic": cmd_quadratic,
            "schedule": cmd_schedule}


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # a polite kill (DVC, a scheduler) stops as cleanly as Ctrl-C


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT both raise KeyboardInterrupt (deferred where a step must not be cut)."""
    import signal

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # A shell without job control starts background commands with SIGINT ignored, and Python then
    # never raises KeyboardInterrupt: `study ... &` in a script, or a CI runner, could not be
    # interrupted cleanly, nor could the helpers of --workers, which their coordinator stops with it.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv=None) -> int:
    import logging

    install_signal_handlers()
    args = arguments.build_parser(__doc__).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    try:
        params = config.load_params(args.params)
        COMMANDS[args.command](args, params)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
