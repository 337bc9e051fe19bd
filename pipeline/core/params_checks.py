"""The checks of params.yaml that pydantic cannot know: the registries' optimizers, hyperparameters
and schedules, ranges against their kinds, keys that depend on each other. config.py's model
validators call them, so a `dataclasses.replace` runs them again. Each fails in one line."""
import typing

from pipeline.core import optimizers, problems, schedules
from pipeline.core.errors import PipelineError


def fail(where: str, message: str) -> typing.NoReturn:
    raise PipelineError(f"params.yaml: {where}: {message}")


def validate_settings(settings: dict, where: str) -> None:
    """optimizer -> {hyperparameter: value}: exactly the optimizer's hyperparameters, each of its kind."""
    for name, hyper in settings.items():
        opt = optimizers.get(name)
        if set(hyper) != set(opt.hyperparams):
            fail(f"{where}.{name}", f"expected exactly {', '.join(opt.hyperparams)}, got {hyper!r}")
        for k, v in hyper.items():
            _check_value(f"{where}.{name}.{k}", k, v)


def _check_value(where: str, name: str, value: float) -> None:
    kind = optimizers.hyperparameter(name).kind
    if kind == "decay" and not 0 < value < 1:
        fail(where, f"{name} must lie strictly between 0 and 1, got {value}")
    if kind == "lr" and not value > 0:
        fail(where, f"{name} must be positive, got {value}")


def _validate_range(name: str, r) -> None:
    where = f"study.search_space.{name}"
    if name in schedules.RUN_SETTINGS:  # a fraction of the run; low = high fixes it
        inside = "[0, 1)" if name == "warmup" else "(0, 1]"
        ok_low = r.low >= 0 if name == "warmup" and r.scale == "linear" else r.low > 0
        if r.scale == "log1m" or r.low > r.high or not ok_low or r.high > 1 or (name == "warmup" and r.high >= 1):
            fail(where, f"{name} is a fraction of the run in {inside}: expected low <= high inside it, "
                         f"scale linear or log, got [{r.low}, {r.high}] {r.scale}")
        return r
    optimizers.hyperparameter(name)
    if r.low >= r.high:
        fail(where, f"low ({r.low}) must be below high ({r.high})")
    if r.scale == "log" and r.low <= 0:
        fail(f"{where}.low", f"a log range must start above 0, got {r.low}")
    if r.scale == "log1m" and not (0 < r.low and r.high < 1):
        fail(where, f"a log1m range must lie inside (0, 1), got [{r.low}, {r.high}]")
    if optimizers.hyperparameter(name).kind == "decay" and not (0 < r.low and r.high < 1):
        fail(where, f"{name} must lie inside (0, 1), got [{r.low}, {r.high}]")
    if optimizers.hyperparameter(name).kind == "lr" and r.low <= 0:
        fail(f"{where}.low", f"{name} must be positive, got {r.low}")
    return r


def validate_study(study) -> None:
    if study.grace_s <= study.heartbeat_s:
        fail("study.grace_s", f"must exceed study.heartbeat_s ({study.heartbeat_s}), got {study.grace_s}")
    if not study.optimizers or not all(isinstance(o, str) for o in study.optimizers):
        fail("study.optimizers", f"list at least one optimizer by name, got {study.optimizers!r}")
    if len(set(study.optimizers)) != len(study.optimizers):
        fail("study.optimizers", f"each optimizer once, got {study.optimizers!r}")
    if not study.problems or len(set(study.problems)) != len(study.problems):
        fail("study.problems", f"list each problem once, got {study.problems!r}")
    for name in study.problems:
        if name not in problems.PROBLEMS:
            fail("study.problems", f"unknown problem {name!r}: choose from {', '.join(problems.PROBLEMS)}")
    if not study.schedules or len(set(study.schedules)) != len(study.schedules):
        fail("study.schedules", f"list each schedule once, got {study.schedules!r}")
    for name in study.schedules:
        if name not in schedules.SCHEDULES:
            fail("study.schedules", f"unknown schedule {name!r}: choose from {', '.join(schedules.SCHEDULES)}")
    for name, r in study.search_space.items():
        _validate_range(name, r)
    # Every range a study can search: its optimizers' hyperparameters, and every schedule's settings
    # (any schedule can be run, `study --schedule`).
    needed = [*(h for o in study.optimizers for h in optimizers.get(o).hyperparams), *schedules.RUN_SETTINGS]
    for name in dict.fromkeys(needed):
        if name not in study.search_space:
            fail(f"study.search_space.{name}", "missing: give its range as {low: ..., high: ..., scale: ...}")
