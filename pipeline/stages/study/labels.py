"""How a study is shown to people: its MLflow run name and its identity as Optuna user attributes.
Kept out of search.py so that rewording a label never changes a study's name."""
from pipeline.core import optimizers, problems
from pipeline.core.config import Params


def _ranges(optimizer: str, params: Params) -> dict:
    space = params.study.search_space
    return {h: f"{space[h].low:g}..{space[h].high:g}" for h in optimizers.get(optimizer).hyperparams}


def identity(optimizer: str, params: Params) -> dict:
    """What the study is, as Optuna user attributes a person reads in optuna-dashboard."""
    t, space = params.train, params.study.search_space
    init = "Glorot uniform" if problems.get(params.problem).hidden else f"{t.init} (std {t.init_std:g})"
    return {"problem": params.problem, "model": problems.get(params.problem).description, "optimizer": optimizer,
            "search_space": {h: f"{r} ({space[h].scale})" for h, r in _ranges(optimizer, params).items()},
            "protocol": f"batch {t.batch_size}, {t.epochs} epochs, init {init}, loss recorded "
                        f"every {t.record_every} examples",
            "objective": f"{params.study.objective}, mean over seeds 0..{params.study.seeds_per_trial - 1}"}


def group(optimizer: str, params: Params) -> str:
    """A study as a person names it, e.g. `mlp · rmsprop`: its trials experiment is `<experiment> · <group> trials`."""
    return f"{params.problem} · {optimizer}"


def run_name(optimizer: str, params: Params) -> str:
    """The study's MLflow run, e.g. `mlp · rmsprop · 100 trials · lr 0.0001..1, gamma 0.5..0.999`."""
    ranges = ", ".join(f"{h} {r}" for h, r in _ranges(optimizer, params).items())
    return f"{group(optimizer, params)} · {params.study.n_trials} trials · {ranges}"
