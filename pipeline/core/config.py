"""params.yaml, validated once at the edge into typed, frozen objects.

Nothing below this module reads YAML or the environment: stages receive these objects. Every
problem is reported as one line naming the key and the fix.
"""
import dataclasses
import difflib
import re
import typing
from pathlib import Path

import yaml

from pipeline.core import optimizers
from pipeline.core.errors import PipelineError

PARAMS_FILE = Path("params.yaml")


@dataclasses.dataclass(frozen=True)
class DataParams:
    url: str
    sha1: str
    n_rows: int
    timeout_s: float
    retries: int


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """The training protocol the engine follows (the book's train_ch11 by default)."""

    batch_size: int
    epochs: int
    record_every: int  # examples between loss records
    init: str  # "normal": w ~ N(0, init_std); "zeros": w = 0; b = 0 either way
    init_std: float
    diverge_factor: float  # a run whose loss ever exceeds this multiple of its starting loss diverged


@dataclasses.dataclass(frozen=True)
class Range:
    """A search range. scale: linear, log (log-uniform), or log1m (1 - value is log-uniform)."""

    low: float
    high: float
    scale: str


OBJECTIVES = ("final_loss", "mean_loss")
SCALES = ("linear", "log", "log1m")


@dataclasses.dataclass(frozen=True)
class StudyParams:
    optimizers: list
    n_trials: int
    seeds_per_trial: int
    seed: int  # seeds the TPE sampler
    objective: str  # final_loss: mean final loss over seeds; mean_loss: mean over the whole curve
    storage: str  # "journal": a journal file under studies/; or an Optuna storage URL
    search_space: dict  # hyperparameter -> Range
    workers: int  # processes sharing the study (none of these three changes the study's identity)
    heartbeat_s: int  # RDB storages: a running trial records a heartbeat this often
    grace_s: int  # ... and is failed as abandoned after this long without one
    reconnect_s: int  # RDB storages: how long workers wait for a restarting database before stopping


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    seeds: int  # seeds per re-run of the winners and the book's settings
    first_seed: int  # evaluation seeds start here, apart from the study's, so winners meet fresh randomness
    framework_seeds: int  # Keras runs go through the book's loop, one seed at a time
    floor_tolerance: float  # "reached the floor": loss <= (1 + tolerance) * least-squares floor
    lr_points: int  # landscape: grid points of a one-hyperparameter search space
    grid_points: int  # landscape: grid side of a two-hyperparameter space
    cube_points: int  # landscape: grid side of a space of three or more hyperparameters
    sampler_repeats: int  # the sampler comparison repeats each sampler over this many seeds
    random_draws: int  # random search is estimated from this many points drawn from the search space
    refine_points: int  # the best known value: a finer grid of this many points per axis around the best
    equivalence_margin: float  # differences within this fraction of (initial loss - floor) are negligible
    quadratic_steps: int
    quadratic: dict  # optimizer -> hyperparameters for the 2-D demo (the registry's where left out)


@dataclasses.dataclass(frozen=True)
class MlflowParams:
    experiment: str


@dataclasses.dataclass(frozen=True)
class Params:
    data: DataParams
    train: TrainParams
    book: dict  # optimizer -> {hyperparameter: value}, the book's settings (the registry's where left out)
    study: StudyParams
    evaluate: EvaluateParams
    mlflow: MlflowParams


def _fail(where: str, message: str) -> typing.NoReturn:
    raise PipelineError(f"params.yaml: {where}: {message}")


def _build(cls, raw, where: str):
    """Build dataclass `cls` from a mapping, rejecting unknown, missing and mistyped keys."""
    if not isinstance(raw, dict):
        _fail(where or "top level", f"expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    key_path = lambda key: f"{where}.{key}" if where else str(key)  # noqa: E731
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(fields)}"
            _fail(key_path(key), f"unknown key; {fix}")
    values = {}
    for name in fields:
        if name not in raw:
            _fail(key_path(name), "missing")
        values[name] = _coerce(hints[name], raw[name], key_path(name))
    return cls(**values)


def _coerce(hint, value, where: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, dict, list) and isinstance(value, hint) and not isinstance(value, bool):
        return value
    _fail(where, f"expected {hint.__name__}, got {value!r}")


def _positive(where: str, value) -> None:
    if value <= 0:
        _fail(where, f"must be positive, got {value}")


def validate_train(train: TrainParams) -> None:
    for key in ("batch_size", "epochs", "record_every", "init_std", "diverge_factor"):
        _positive(f"train.{key}", getattr(train, key))
    if train.init not in ("normal", "zeros"):
        _fail("train.init", f"expected 'normal' or 'zeros', got {train.init!r}")


def _validate_settings(settings: dict, where: str, fallback: str, optimizer_names) -> dict:
    """optimizer -> {hyperparameter: value}, exactly the optimizer's hyperparameters; an optimizer
    params.yaml leaves out gets the registry's setting (`fallback`: "book" or "quadratic")."""
    checked = {}
    for name, hyper in settings.items():
        opt = optimizers.get(name)
        if not isinstance(hyper, dict) or set(hyper) != set(opt.hyperparams):
            _fail(f"{where}.{name}", f"expected exactly {', '.join(opt.hyperparams)}, got {hyper!r}")
        checked[name] = {k: _coerce(float, v, f"{where}.{name}.{k}") for k, v in hyper.items()}
        for k, v in checked[name].items():
            _check_value(f"{where}.{name}.{k}", k, v)
    for name in optimizer_names:
        checked.setdefault(name, dict(getattr(optimizers.get(name), fallback)))
    return checked


def _check_value(where: str, name: str, value: float) -> None:
    kind = optimizers.hyperparameter(name).kind
    if kind == "decay" and not 0 < value < 1:
        _fail(where, f"{name} must lie strictly between 0 and 1, got {value}")
    if kind == "lr" and not value > 0:
        _fail(where, f"{name} must be positive, got {value}")


def _validate_evaluate(ev: EvaluateParams, study: StudyParams) -> EvaluateParams:
    for key in ("seeds", "framework_seeds", "floor_tolerance", "lr_points", "grid_points", "cube_points",
                "sampler_repeats", "quadratic_steps", "random_draws", "refine_points", "equivalence_margin"):
        _positive(f"evaluate.{key}", getattr(ev, key))
    if ev.seeds < 2:
        _fail("evaluate.seeds", "need at least 2 seeds for a confidence interval")
    return dataclasses.replace(ev, quadratic=_validate_settings(ev.quadratic, "evaluate.quadratic", "quadratic",
                                                                study.optimizers))


def _validate_range(name: str, raw) -> Range:
    where = f"study.search_space.{name}"
    optimizers.hyperparameter(name)
    r = _build(Range, raw, where)
    if r.scale not in SCALES:
        _fail(f"{where}.scale", f"expected one of {', '.join(SCALES)}, got {r.scale!r}")
    if r.low >= r.high:
        _fail(where, f"low ({r.low}) must be below high ({r.high})")
    if r.scale == "log" and r.low <= 0:
        _fail(f"{where}.low", f"a log range must start above 0, got {r.low}")
    if r.scale == "log1m" and not (0 < r.low and r.high < 1):
        _fail(where, f"a log1m range must lie inside (0, 1), got [{r.low}, {r.high}]")
    if optimizers.hyperparameter(name).kind == "decay" and not (0 < r.low and r.high < 1):
        _fail(where, f"{name} must lie inside (0, 1), got [{r.low}, {r.high}]")
    if optimizers.hyperparameter(name).kind == "lr" and r.low <= 0:
        _fail(f"{where}.low", f"{name} must be positive, got {r.low}")
    return r


def _validate_study(study: StudyParams) -> StudyParams:
    for key in ("n_trials", "seeds_per_trial", "workers", "heartbeat_s", "grace_s", "reconnect_s"):
        _positive(f"study.{key}", getattr(study, key))
    if study.grace_s <= study.heartbeat_s:
        _fail("study.grace_s", f"must exceed study.heartbeat_s ({study.heartbeat_s}), got {study.grace_s}")
    if not study.optimizers or not all(isinstance(o, str) for o in study.optimizers):
        _fail("study.optimizers", f"list at least one optimizer by name, got {study.optimizers!r}")
    if len(set(study.optimizers)) != len(study.optimizers):
        _fail("study.optimizers", f"each optimizer once, got {study.optimizers!r}")
    space = {name: _validate_range(name, raw) for name, raw in study.search_space.items()}
    for name in study.optimizers:  # a hyperparameter params.yaml leaves out gets the registry's range
        for h in optimizers.get(name).hyperparams:
            space.setdefault(h, Range(*optimizers.hyperparameter(h).search))
    if study.objective not in OBJECTIVES:
        _fail("study.objective", f"expected one of {', '.join(OBJECTIVES)}, got {study.objective!r}")
    return dataclasses.replace(study, search_space=space, optimizers=list(study.optimizers))


def parse_params(raw) -> Params:
    params = _build(Params, raw, "")
    for key in ("n_rows", "timeout_s"):
        _positive(f"data.{key}", getattr(params.data, key))
    if params.data.retries < 0:
        _fail("data.retries", f"must be 0 or more, got {params.data.retries}")
    if len(params.data.sha1) != 40:
        _fail("data.sha1", "expected a 40-character hex SHA-1")
    validate_train(params.train)
    study = _validate_study(params.study)
    book = _validate_settings(params.book, "book", "book", study.optimizers)
    return dataclasses.replace(params, book=book, study=study, evaluate=_validate_evaluate(params.evaluate, study))


# Every place a driver takes a secret from: `user:password@` in a URL, and key=value pairs in a
# query string (`?password=`, pymysql's `passwd=`) or in a libpq connection string.
_USERINFO = re.compile(r"(://[^/:@?#\s]*:)[^/?#\s]*@")  # greedy: a raw @ in the password
_SECRET_PAIR = re.compile(r"(?i)\b([\w.-]*(?:password|passwd|pwd|secret|token)[\w.-]*\s*=\s*)('[^']*'|[^&;\s'\"]+)")


def mask_url(text: str) -> str:
    """A URL (or a message quoting one) with every password replaced by ***, for logs, tags and
    messages. SQLAlchemy's own `render_as_string(hide_password=True)` masks only the first form."""
    return _SECRET_PAIR.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def load_params(path: Path = PARAMS_FILE) -> Params:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run from the project root") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PipelineError(f"{path}: malformed YAML{at}: {getattr(e, 'problem', e)}") from None
    return parse_params(raw)
