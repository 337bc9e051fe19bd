"""params.yaml, validated once at the edge into typed, frozen objects.

The objects are pydantic dataclasses (frozen, unknown keys forbidden, strict scalars, Literal for
choices, bounds as Field constraints), so `dataclasses.replace` and `asdict` work on them and a
replace is validated again. What pydantic cannot know (the registry's optimizers and
hyperparameters, ranges against their kinds, keys that depend on each other) is checked after it.
Every problem is reported as one line naming the key and the fix, in our words, not pydantic's
(`describe`). Nothing below this module reads YAML or the environment.
"""
import dataclasses
import difflib
import re
import typing
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import ConfigDict, Field, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from pipeline.core import optimizers, problems, schedules
from pipeline.core.errors import PipelineError

PARAMS_FILE = Path("params.yaml")
Positive = Annotated[StrictInt, Field(gt=0)]
PositiveFloat = Annotated[StrictFloat, Field(gt=0)]
NonNegative = Annotated[StrictInt, Field(ge=0)]
NonNegativeFloat = Annotated[StrictFloat, Field(ge=0)]
Fraction = Annotated[StrictFloat, Field(gt=0, lt=1)]  # a decay: remembers about 1 / (1 - value) steps
OBJECTIVES = ("final_loss", "mean_loss")
SCALES = ("linear", "log", "log1m")
frozen = dataclass(frozen=True, config=ConfigDict(extra="forbid"))


@frozen
class DataParams:
    url: StrictStr
    sha1: Annotated[StrictStr, Field(min_length=40, max_length=40)]
    n_rows: Positive
    timeout_s: PositiveFloat
    retries: Annotated[StrictInt, Field(ge=0)]


@frozen
class TrainParams:
    """The training protocol the engine follows (the book's train_ch11 by default)."""

    batch_size: Positive
    epochs: Positive
    record_every: Positive  # examples between loss records
    init: Literal["normal", "zeros"]  # "normal": w ~ N(0, init_std); "zeros": w = 0; b = 0 either way
    init_std: PositiveFloat
    diverge_factor: PositiveFloat  # a run whose loss ever exceeds this multiple of its starting loss diverged


@frozen
class Range:
    """A search range. scale: linear, log (log-uniform), or log1m (1 - value is log-uniform)."""

    low: StrictFloat
    high: StrictFloat
    scale: Literal["linear", "log", "log1m"]


@frozen
class StudyParams:
    problems: list  # each a name in the problem registry (pipeline/core/problems.py)
    optimizers: list
    schedules: list  # each a name in the schedule registry (pipeline/core/schedules.py)
    n_trials: Positive
    seeds_per_trial: Positive
    seed: StrictInt  # seeds the TPE sampler
    objective: Literal["final_loss", "mean_loss"]  # final_loss: mean final loss over seeds; mean_loss: over the curve
    storage: StrictStr  # "journal": a journal file under studies/; or an Optuna storage URL
    search_space: typing.Dict[str, Range]  # hyperparameter or schedule setting -> Range (a setting's low = high fixes it)
    workers: Positive  # processes sharing the study (none of these four changes the study's identity)
    heartbeat_s: Positive  # RDB storages: a running trial records a heartbeat this often
    grace_s: Positive  # ... and is failed as abandoned after this long without one
    reconnect_s: Positive  # RDB storages: how long workers wait for a restarting database before stopping


@frozen
class EvaluateParams:
    seeds: Positive  # seeds per re-run of the winners and the book's settings
    first_seed: StrictInt  # evaluation seeds start here, apart from the study's, so winners meet fresh randomness
    framework_seeds: Positive  # Keras runs go through the book's loop, one seed at a time
    floor_tolerance: PositiveFloat  # "reached the floor": loss <= (1 + tolerance) * least-squares floor
    lr_points: Positive  # landscape: grid points of a one-hyperparameter search space
    grid_points: Positive  # landscape: grid side of a two-hyperparameter space
    cube_points: Positive  # landscape: grid side of a space of three or more hyperparameters
    sampler_repeats: Positive  # the sampler comparison repeats each sampler over this many seeds
    random_draws: Positive  # random search is estimated from this many points drawn from the search space
    refine_points: Positive  # the best known value: a finer grid of this many points per axis around the best
    equivalence_margin: PositiveFloat  # differences within this fraction of (initial loss - floor) are negligible
    quadratic_steps: Positive
    quadratic: dict  # optimizer -> hyperparameters for the 2-D demo (the registry's where left out)


@frozen
class MlflowParams:
    experiment: StrictStr


@frozen
class Params:
    data: DataParams
    train: TrainParams
    book: dict  # optimizer -> {hyperparameter: value}, the book's settings (the registry's where left out)
    study: StudyParams
    evaluate: EvaluateParams
    mlflow: MlflowParams
    problem: StrictStr = "linreg"  # not in params.yaml: set by for_problem, which also sets train
    schedule: StrictStr = "constant"  # not in params.yaml: the study stage's, set by for_problem


def for_problem(params: Params, problem: str, schedule: str = "constant") -> Params:
    """The params one problem's stages run with: its name, `train` with the problem's changes, and
    the schedule a study trains with."""
    return dataclasses.replace(params, problem=problem, schedule=schedule, train=problems.protocol(problem, params.train))


def _fail(where: str, message: str) -> typing.NoReturn:
    raise PipelineError(f"params.yaml: {where}: {message}")


# --- pydantic's errors in our words ------------------------------------------------------------

_TYPES = {"int_type": "int", "float_type": "float", "string_type": "str", "dict_type": "dict", "list_type": "list",
          "bool_type": "bool"}


def _fields_at(loc: tuple) -> list:
    """The keys known where `loc` points (for "did you mean")."""
    cls, keys = Params, list(loc)
    while keys:
        hint = typing.get_type_hints(cls).get(keys.pop(0)) if dataclasses.is_dataclass(cls) else None
        if typing.get_origin(hint) is dict:  # a mapping of name -> params object: skip the name
            hint = typing.get_args(hint)[1]
            keys = keys[1:]
        if not dataclasses.is_dataclass(hint):
            return []
        cls = hint
    return [f.name for f in dataclasses.fields(cls)]


def describe(error: dict) -> tuple:
    """(where, message) for one pydantic error, in the words this project's messages use."""
    loc = tuple(str(k) for k in error["loc"])
    where, kind, value = ".".join(loc) or "top level", error["type"], error.get("input")
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        known = _fields_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        return where, f"unknown key; did you mean {close[0]!r}?" if close else f"unknown key; known keys: {', '.join(known)}"
    if kind in ("missing", "missing_argument"):
        return where, "missing"
    if kind in _TYPES:
        return where, f"expected {_TYPES[kind]}, got {value!r}"
    if kind in ("dataclass_type", "dataclass_args_type", "model_type"):
        return where, f"expected a mapping, got {type(value).__name__}"
    if kind == "greater_than" and error["ctx"]["gt"] == 0:
        return where, f"must be positive, got {value}"
    if kind in ("greater_than", "less_than"):
        return where, f"must lie strictly between 0 and 1, got {value}"
    if kind == "greater_than_equal":
        return where, f"must be {error['ctx']['ge']} or more, got {value}"
    if kind in ("string_too_short", "string_too_long") and loc[-1] == "sha1":
        return where, "expected a 40-character hex SHA-1"
    if kind == "literal_error":
        choices = [c.strip(" '") for c in re.split(r",| or ", error["ctx"]["expected"])]
        if loc[-1] == "init":
            return where, f"expected 'normal' or 'zeros', got {value!r}"
        return where, f"expected one of {', '.join(choices)}, got {value!r}"
    return where, error["msg"]


def validated(build, *args, **kwargs):
    """Build a params object (or dataclasses.replace one), with the first problem as one line."""
    try:
        return build(*args, **kwargs)
    except ValidationError as e:
        errors = e.errors()  # an unknown key first: "did you mean" is the most helpful line
        first = next((x for x in errors if x["type"] in ("unexpected_keyword_argument", "extra_forbidden")), errors[0])
        _fail(*describe(first))


def check(annotation, value, what: str):
    """One value against one of the annotations above (the CLI's flags use the same rules)."""
    try:
        return TypeAdapter(annotation).validate_python(value)
    except ValidationError as e:
        raise ValueError(describe({**e.errors()[0], "loc": (what,)})[1]) from None


# --- what pydantic cannot know ------------------------------------------------------------------

def _validate_settings(settings: dict, where: str, fallback: str, optimizer_names) -> dict:
    """optimizer -> {hyperparameter: value}, exactly the optimizer's hyperparameters; an optimizer
    params.yaml leaves out gets the registry's setting (`fallback`: "book" or "quadratic")."""
    checked = {}
    for name, hyper in settings.items():
        opt = optimizers.get(name)
        if not isinstance(hyper, dict) or set(hyper) != set(opt.hyperparams):
            _fail(f"{where}.{name}", f"expected exactly {', '.join(opt.hyperparams)}, got {hyper!r}")
        checked[name] = {}
        for k, v in hyper.items():
            try:
                checked[name][k] = check(StrictFloat, v, k)
            except ValueError as e:
                _fail(f"{where}.{name}.{k}", str(e))
            _check_value(f"{where}.{name}.{k}", k, checked[name][k])
    for name in optimizer_names:
        checked.setdefault(name, dict(getattr(optimizers.get(name), fallback)))
    return checked


def _check_value(where: str, name: str, value: float) -> None:
    kind = optimizers.hyperparameter(name).kind
    if kind == "decay" and not 0 < value < 1:
        _fail(where, f"{name} must lie strictly between 0 and 1, got {value}")
    if kind == "lr" and not value > 0:
        _fail(where, f"{name} must be positive, got {value}")


def _validate_range(name: str, r: Range) -> Range:
    where = f"study.search_space.{name}"
    if name in schedules.RUN_SETTINGS:  # a fraction of the run; low = high fixes it
        inside = "[0, 1)" if name == "warmup" else "(0, 1]"
        ok_low = r.low >= 0 if name == "warmup" and r.scale == "linear" else r.low > 0
        if r.scale == "log1m" or r.low > r.high or not ok_low or r.high > 1 or (name == "warmup" and r.high >= 1):
            _fail(where, f"{name} is a fraction of the run in {inside}: expected low <= high inside it, "
                         f"scale linear or log, got [{r.low}, {r.high}] {r.scale}")
        return r
    optimizers.hyperparameter(name)
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
    if study.grace_s <= study.heartbeat_s:
        _fail("study.grace_s", f"must exceed study.heartbeat_s ({study.heartbeat_s}), got {study.grace_s}")
    if not study.optimizers or not all(isinstance(o, str) for o in study.optimizers):
        _fail("study.optimizers", f"list at least one optimizer by name, got {study.optimizers!r}")
    if len(set(study.optimizers)) != len(study.optimizers):
        _fail("study.optimizers", f"each optimizer once, got {study.optimizers!r}")
    if not study.problems or len(set(study.problems)) != len(study.problems):
        _fail("study.problems", f"list each problem once, got {study.problems!r}")
    for name in study.problems:
        if name not in problems.PROBLEMS:
            _fail("study.problems", f"unknown problem {name!r}: choose from {', '.join(problems.PROBLEMS)}")
    if not study.schedules or len(set(study.schedules)) != len(study.schedules):
        _fail("study.schedules", f"list each schedule once, got {study.schedules!r}")
    for name in study.schedules:
        if name not in schedules.SCHEDULES:
            _fail("study.schedules", f"unknown schedule {name!r}: choose from {', '.join(schedules.SCHEDULES)}")
    space = {name: _validate_range(name, r) for name, r in study.search_space.items()}
    for name in study.optimizers:  # a hyperparameter params.yaml leaves out gets the registry's range
        for h in optimizers.get(name).hyperparams:
            space.setdefault(h, Range(*optimizers.hyperparameter(h).search))
    for name, setting in schedules.RUN_SETTINGS.items():  # any schedule can be run (`study --schedule`)
        space.setdefault(name, Range(*setting.search))
    return dataclasses.replace(study, search_space=space, optimizers=list(study.optimizers),
                               problems=list(study.problems), schedules=list(study.schedules))


def parse_params(raw) -> Params:
    if not isinstance(raw, dict):
        _fail("top level", f"expected a mapping, got {type(raw).__name__}")
    if "problem" in raw:  # set per stage from study.problems, never by hand
        _fail("problem", "unknown key; did you mean 'study.problems'?")
    params = validated(TypeAdapter(Params).validate_python, raw)
    if params.evaluate.seeds < 2:
        _fail("evaluate.seeds", "need at least 2 seeds for a confidence interval")
    study = _validate_study(params.study)
    book = _validate_settings(params.book, "book", "book", study.optimizers)
    evaluate = dataclasses.replace(params.evaluate, quadratic=_validate_settings(
        params.evaluate.quadratic, "evaluate.quadratic", "quadratic", study.optimizers))
    return dataclasses.replace(params, book=book, study=study, evaluate=evaluate)


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
