"""params.yaml, validated once at the edge into typed, frozen objects.

The objects are pydantic dataclasses (frozen, unknown keys forbidden, strict scalars, Literal for
choices, bounds as Field constraints), so `dataclasses.replace` and `asdict` work on them. Checks
that span fields or read the registries (optimizers and hyperparameters, ranges against their
kinds, keys that depend on each other) are model validators, so a `replace` runs them again too.
Every setting has one source, params.yaml: the registries hold no default that is a knob. Every
problem is reported as one line naming the key and the fix, in our words, not pydantic's
(`describe`). Nothing below this module reads YAML or the environment.
"""
import dataclasses
import difflib
import re
import typing
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from pipeline.core import optimizers, problems
from pipeline.core.errors import PipelineError
from pipeline.core.params_checks import fail, validate_settings, validate_study

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
    """The training protocol the engine follows: `train` with a problem's changes (`protocols`)."""

    batch_size: Positive
    epochs: Positive
    record_every: Positive  # examples between loss records
    init: Literal["normal", "zeros"]  # "normal": w ~ N(0, init_std); "zeros": w = 0; b = 0 either way
    init_std: PositiveFloat
    diverge_factor: PositiveFloat  # a run whose loss ever exceeds this multiple of its starting loss diverged
    drop_remainder: StrictBool = False  # each epoch drops its last, short batch (DeepOBS's protocol)


@frozen
class ProtocolChanges:
    """What one problem changes in `train` (params.yaml's `protocols.<problem>`); None keeps train's."""

    batch_size: typing.Optional[Positive] = None
    epochs: typing.Optional[Positive] = None
    record_every: typing.Optional[Positive] = None
    drop_remainder: typing.Optional[StrictBool] = None


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

    @model_validator(mode="after")
    def consistent(self):
        validate_study(self)
        return self


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
    quadratic: typing.Dict[str, typing.Dict[str, StrictFloat]]  # optimizer -> hyperparameters for the 2-D demo

    @model_validator(mode="after")
    def consistent(self):
        if self.seeds < 2:
            fail("evaluate.seeds", "need at least 2 seeds for a confidence interval")
        validate_settings(self.quadratic, "evaluate.quadratic")
        return self


@frozen
class MlflowParams:
    experiment: StrictStr


@frozen
class Params:
    data: DataParams
    train: TrainParams
    protocols: typing.Dict[str, ProtocolChanges]  # problem -> its changes to `train`
    book: typing.Dict[str, typing.Dict[str, StrictFloat]]  # optimizer -> {hyperparameter: value}, the book's settings
    study: StudyParams
    evaluate: EvaluateParams
    mlflow: MlflowParams
    problem: typing.Optional[StrictStr] = None  # not in params.yaml: set by for_problem (no default problem)
    schedule: StrictStr = "constant"  # not in params.yaml: the study stage's, set by for_problem

    @model_validator(mode="after")
    def consistent(self):
        for name in self.protocols:
            if name not in problems.PROBLEMS:
                fail(f"protocols.{name}", f"unknown problem {name!r}: choose from {', '.join(problems.PROBLEMS)}")
        validate_settings(self.book, "book")
        # The evaluation's schedule demo always runs the book's SGD (stages/evaluate/scheduled.py).
        for where, settings, needed in (("book", self.book, [*self.study.optimizers, "sgd"]),
                                        ("evaluate.quadratic", self.evaluate.quadratic, self.study.optimizers)):
            for name in dict.fromkeys(needed):
                if name not in settings:
                    fail(f"{where}.{name}", f"missing: give {name}'s setting "
                                             f"({', '.join(optimizers.get(name).hyperparams)}), as for the others")
        return self


def protocol(params: Params, problem: str) -> TrainParams:
    """`train` with the problem's changes from `protocols`."""
    changes = params.protocols.get(problem)
    given = {} if changes is None else {k: v for k, v in dataclasses.asdict(changes).items() if v is not None}
    return validated(dataclasses.replace, params.train, **given)


def for_problem(params: Params, problem: str, schedule: str = "constant") -> Params:
    """The params one problem's stages run with: its name, its protocol as `train`, and the schedule
    a study trains with."""
    return dataclasses.replace(params, problem=problem, schedule=schedule, train=protocol(params, problem))


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
        fail(*describe(first))


def check(annotation, value, what: str):
    """One value against one of the annotations above (the CLI's flags use the same rules)."""
    try:
        return TypeAdapter(annotation).validate_python(value)
    except ValidationError as e:
        raise ValueError(describe({**e.errors()[0], "loc": (what,)})[1]) from None


def parse_params(raw) -> Params:
    if not isinstance(raw, dict):
        fail("top level", f"expected a mapping, got {type(raw).__name__}")
    if "problem" in raw:  # set per stage from study.problems, never by hand
        fail("problem", "unknown key; did you mean 'study.problems'?")
    return validated(TypeAdapter(Params).validate_python, raw)


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
