"""The command line's grammar: every command, flag and its check (params.yaml's rules, config.check).
cli.py runs what it parses."""
import argparse

from pipeline.core import config, paths


def _flag(annotation, convert):
    """An argparse type that checks a flag with the same rule params.yaml is checked with."""
    def parse(text: str):
        try:
            return config.check(annotation, convert(text), "")
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{e}") from None
    return parse


_positive_int = _flag(config.Positive, int)
_positive_float = _flag(config.PositiveFloat, float)
_unit_interval = _flag(config.Fraction, float)
_non_negative_int = _flag(config.NonNegative, int)
_non_negative_float = _flag(config.NonNegativeFloat, float)


def _steps_list(text: str) -> tuple:
    """--steps-at 15,30: update counts, comma-separated."""
    try:
        return tuple(_non_negative_int(x) for x in text.split(",") if x.strip())
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e} (in {text!r}; write e.g. 15,30)") from None


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line, like every other error here (subcommands inherit this)."""

    def error(self, message):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def build_parser(description: str) -> argparse.ArgumentParser:
    from pipeline.core.optimizers import HYPERPARAMETERS, OPTIMIZERS
    from pipeline.core.problems import PROBLEMS
    from pipeline.core.schedules import RUN_SETTINGS, SCHEDULES, SETTINGS

    parser = _Parser(prog="python -m pipeline", description=description)
    parser.add_argument("--params", default=str(config.PARAMS_FILE), help="params file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("download", help="fetch the airfoil file and verify its SHA-1",
                       description=f"Fetch data.url into {paths.RAW_PATH} and verify data.sha1. "
                       "If AIRFOIL_MIRROR is set (a path or URL), it is tried first.")

    p = sub.add_parser("prepare", help="validate, standardize, keep the first data.n_rows rows",
                       description=f"Validate {paths.RAW_PATH}, standardize every column and write the "
                       f"first data.n_rows rows and stats.json to {paths.PREPARED_DIR}/.")

    def optimizer_flags(p, defaults: str, *aliases):
        p.add_argument("--optimizer", required=True, choices=sorted(OPTIMIZERS))
        for h in HYPERPARAMETERS.values():  # one flag per hyperparameter the registry knows
            names = [f"--{h.name}", *(a for a in aliases if h.name == "lr")]
            p.add_argument(*names, dest=h.name, type=_unit_interval if h.kind == "decay" else _positive_float,
                           help=f"{h.description} (default: {defaults})")

    def problem_flag(p):
        p.add_argument("--problem", choices=sorted(PROBLEMS), default="linreg",
                       help="the model and its protocol, from pipeline/core/problems.py (default: %(default)s)")
        p.add_argument("--schedule", choices=list(SCHEDULES), default="constant",
                       help="the learning-rate schedule, from pipeline/core/schedules.py (default: %(default)s)")

    p = sub.add_parser("train", help="train one configuration and print its final loss",
                       description="Train a problem's model (the book's linear regression by default) once on the "
                       "prepared data.")
    optimizer_flags(p, "the book's setting, book.<optimizer> in params.yaml")
    problem_flag(p)
    p.add_argument("--seed", type=int, default=0, help="fixes the initial weights and the shuffles (default: 0)")
    p.add_argument("--batch-size", type=_positive_int, help="default: train.batch_size")
    p.add_argument("--epochs", type=_positive_int, help="default: train.epochs")
    p.add_argument("--init", choices=["normal", "zeros"],
                   help="the linear model's initial weights (default: train.init); a network is always Glorot-initialised")
    for setting in RUN_SETTINGS.values():  # the schedule's settings as a study searches them
        p.add_argument("--" + setting.name, type=_unit_interval, help=f"{setting.description}, for a schedule "
                       f"that reads it (default: {setting.default:g})")
    p.add_argument("--json", action="store_true",
                   help="print losses, examples, effective lr, the architecture and the initial parameters as JSON")

    p = sub.add_parser("study", help="run (or resume) the Optuna study of one problem and optimizer",
                       description="Search the optimizer's hyperparameters with a seeded TPE study "
                       "(study.* in params.yaml), log every trial to MLflow, write studies/<problem>/<optimizer>/<schedule>/.")
    p.add_argument("optimizer", choices=sorted(OPTIMIZERS))
    problem_flag(p)
    p.add_argument("--storage", help="Optuna storage URL (default: OPTUNA_STORAGE, else study.storage); "
                   "prefer OPTUNA_STORAGE for URLs with a password, which the process list would show")
    p.add_argument("--workers", type=_positive_int, help="worker processes on this machine (default: study.workers)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a helper started by --workers

    p = sub.add_parser("evaluate", help="re-run the winners; compare them; landscape, samplers, 2-D",
                       description="Read studies/*/*/best.json and trials.csv, write reports/evaluation/.")

    p = sub.add_parser("report", help="render reports/report.html and report.pdf from the evaluation",
                       description="Render the report (HTML with embedded figures, and PDF) and log it to MLflow.")

    p = sub.add_parser("ui", help="MLflow's UI, opened on this pipeline's studies",
                       description="Print the URL of the studies' runs (the training-runs view of mlflow.experiment) "
                       "and start `mlflow ui` on the tracking store (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).")
    p.add_argument("--host", default="127.0.0.1", help="default: %(default)s (loopback only)")
    p.add_argument("--port", type=_positive_int, default=5000, help="default: %(default)s")
    p.add_argument("--print-url", action="store_true", help="print the URL and exit")

    p = sub.add_parser("quadratic", help="the book's 2-D demo on f = 0.1 x1^2 + 2 x2^2",
                       description="Run an optimizer from (-5, -2) on f = 0.1 x1^2 + 2 x2^2 and print the book's line.")
    optimizer_flags(p, "the 2-D demo's setting, evaluate.quadratic.<optimizer> in params.yaml", "--eta")
    p.add_argument("--steps", type=_positive_int, default=20, help="default: %(default)s")
    p.add_argument("--trace", help="also write the path as CSV (step,x1,x2,f) to this file")

    p = sub.add_parser("schedule", help="a learning-rate schedule's rate at each update (D2L 11.11's figures)",
                       description="Print `t <update> lr <rate>` for updates 0 .. steps - 1. Every setting left out is "
                       "the book's figure's, from pipeline/core/schedules.py.")
    p.add_argument("name", choices=list(SCHEDULES))
    p.add_argument("--steps", type=_positive_int, help="updates to print (default: the book's figure's)")
    p.add_argument("--base-lr", type=_non_negative_float, help="the initial (peak, with a warmup) rate")
    for setting in SETTINGS.values():  # one flag per setting the registry knows
        kind = {"rate": _non_negative_float, "steps": _non_negative_int, "fraction": _unit_interval,
                "steps list": _steps_list}[setting.kind]
        p.add_argument("--" + setting.name.replace("_", "-"), dest=setting.name, type=kind, help=setting.description)
    p.add_argument("--json", action="store_true", help="print the rates as one JSON list")
    return parser
