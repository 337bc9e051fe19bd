"""params.yaml is validated once, with one-line messages that name the key and the fix."""
import re

import pytest
import yaml

from pipeline.core import config, masking
from conftest import ROOT, assert_one_line_error, cli


def raw_params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_committed_params_are_valid_and_typed():
    params = config.load_params(ROOT / "params.yaml")
    assert params.train.batch_size == 10 and isinstance(params.train.init_std, float)
    assert params.book["rmsprop"] == {"lr": 0.01, "gamma": 0.9}


@pytest.mark.parametrize("edit, expected", [
    (lambda p: p["train"].update(batch_sise=10), "train.batch_sise: unknown key; did you mean 'batch_size'?"),
    (lambda p: p["data"].pop("sha1"), "params.yaml: data.sha1: missing"),
    (lambda p: p.update(evaluat={}), "params.yaml: evaluat: unknown key; did you mean 'evaluate'?"),
    (lambda p: p["train"].update(epochs=0), "train.epochs: must be positive"),
    (lambda p: p["train"].update(epochs="two"), "train.epochs: expected int, got 'two'"),
    (lambda p: p["train"].update(init="uniform"), "train.init: expected 'normal' or 'zeros'"),
    (lambda p: p["book"].update(adamw={"lr": 0.1}), "unknown optimizer 'adamw'"),
    (lambda p: p["book"].update(adam={"lr": 0.1}), "book.adam: expected exactly lr, beta1, beta2"),
    (lambda p: p["book"].update(adam={"lr": "fast", "beta1": 0.9, "beta2": 0.999}), "book.adam.lr: expected float"),
    (lambda p: p["book"].update(rmsprop={"lr": 0.1, "gamma": 1.5}), "book.rmsprop.gamma: gamma must lie strictly between 0"),
    (lambda p: p["evaluate"]["quadratic"].update(sgd={"lr": -1}), "evaluate.quadratic.sgd.lr: lr must be positive"),
    (lambda p: p["study"].update(optimizers=["sgd", "sgd"]), "study.optimizers: each optimizer once"),
    (lambda p: p["study"].update(problems=["cnn"]), "study.problems: unknown problem 'cnn': choose from linreg, quadratic_deep, mlp, digits"),
    (lambda p: p["study"].update(problems=[]), "study.problems: list each problem once, got []"),
    (lambda p: p.update(problem="mlp"), "params.yaml: problem: unknown key; did you mean 'study.problems'?"),
    (lambda p: p["study"]["search_space"].update(betta={"low": 0.5, "high": 0.9, "scale": "linear"}),
     "unknown hyperparameter 'betta'"),
    (lambda p: p["study"]["search_space"]["lr"].update(scale="linear", low=0.0), "study.search_space.lr.low: lr must be positive"),
    (lambda p: p["evaluate"].update(cube_points=0), "evaluate.cube_points: must be positive"),
    (lambda p: p["book"].update(rmsprop={"lr": 0.1}), "book.rmsprop: expected exactly lr, gamma"),
    (lambda p: p["study"].update(optimizers=["sgd", "adamw"]), "unknown optimizer 'adamw'"),
    (lambda p: p["study"].update(n_trials=0), "study.n_trials: must be positive"),
    (lambda p: p["study"].update(seeds_per_trial=-1), "study.seeds_per_trial: must be positive"),
    (lambda p: p["evaluate"].update(seeds=0), "evaluate.seeds: must be positive"),
    (lambda p: p["study"].update(grace_s=5), "study.grace_s: must exceed study.heartbeat_s (10)"),
    (lambda p: p["study"].update(objective="best_loss"), "study.objective: expected one of final_loss, mean_loss"),
    (lambda p: p["study"]["search_space"]["lr"].update(low=1.0), "study.search_space.lr: low (1.0) must be below high (1.0)"),
    (lambda p: p["study"]["search_space"]["gamma"].update(high=1.5), "a log1m range must lie inside (0, 1)"),
    (lambda p: p["study"]["search_space"]["gamma"].update(scale="linear", low=-0.5), "gamma must lie inside (0, 1)"),
    (lambda p: p["study"]["search_space"]["lr"].update(scale="exp"), "study.search_space.lr.scale: expected one of"),
    (lambda p: p["study"].update(schedules=["cosine", "onecycle"]), "study.schedules: unknown schedule 'onecycle': choose from"),
    (lambda p: p["study"].update(schedules=[]), "study.schedules: list each schedule once, got []"),
    (lambda p: p["study"]["search_space"]["final"].update(high=2.0), "study.search_space.final: final is a fraction of "
                                                                      "the run in (0, 1]"),
    (lambda p: p["study"]["search_space"]["warmup"].update(high=1.0), "warmup is a fraction of the run in [0, 1)"),
    (lambda p: p["study"]["search_space"]["drop"].update(low=0.5, high=0.2), "expected low <= high inside it"),
])
def test_bad_params_stop_the_command_in_one_line_naming_the_key(edit, expected, tmp_path):
    raw = raw_params()
    edit(raw)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert_one_line_error(cli("study", "sgd", cwd=tmp_path), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing else written


@pytest.mark.parametrize("edit, expected", [
    (lambda p: p["book"].pop("adam"), "params.yaml: book.adam: missing: give adam's setting (lr, beta1, beta2)"),
    (lambda p: p["evaluate"]["quadratic"].pop("rmsprop"), "evaluate.quadratic.rmsprop: missing: give rmsprop's setting"),
    (lambda p: p["study"]["search_space"].pop("gamma"), "study.search_space.gamma: missing: give its range"),
    (lambda p: p["study"]["search_space"].pop("warmup"), "study.search_space.warmup: missing"),
    (lambda p: p["protocols"].update(cnn={"epochs": 3}), "protocols.cnn: unknown problem 'cnn'"),
    (lambda p: p["protocols"]["mlp"].update(epochs=0), "protocols.mlp.epochs: must be positive"),
    (lambda p: p["protocols"]["mlp"].update(epoch=3), "protocols.mlp.epoch: unknown key; did you mean 'epochs'?"),
])
def test_every_setting_has_one_source_and_a_missing_one_is_named(edit, expected):
    """No registry fills a gap: params.yaml is the one place a book setting, a 2-D setting, a search
    range or a problem's protocol is written, and a missing one is refused in one line."""
    from pipeline.core.errors import PipelineError
    raw = raw_params()
    raw["study"]["optimizers"] = ["sgd", "rmsprop", "adam"]
    edit(raw)
    with pytest.raises(PipelineError, match=re.escape(expected)):
        config.parse_params(raw)


def test_a_replace_runs_the_cross_field_checks_again(params):
    """The checks are pydantic model validators: dataclasses.replace cannot skip them."""
    import dataclasses
    from pipeline.core.errors import PipelineError
    with pytest.raises(PipelineError, match="study.grace_s: must exceed study.heartbeat_s"):
        dataclasses.replace(params.study, grace_s=params.study.heartbeat_s)
    with pytest.raises(PipelineError, match="evaluate.seeds: need at least 2 seeds"):
        dataclasses.replace(params.evaluate, seeds=1)
    with pytest.raises(PipelineError, match="book.adam: missing"):
        dataclasses.replace(params, book={k: v for k, v in params.book.items() if k != "adam"},
                            study=dataclasses.replace(params.study, optimizers=["adam"]))


def test_each_problem_trains_by_its_protocol_from_params(params):
    """train is every problem's protocol; protocols.<problem> changes it, and train's own knobs reach a
    problem wherever its protocol does not set them."""
    import dataclasses
    assert config.protocol(params, "linreg") == params.train
    mlp = config.protocol(params, "mlp")
    assert (mlp.epochs, mlp.record_every, mlp.batch_size) == (10, 1500, 10)
    raw = raw_params()
    raw["train"].update(batch_size=20, init_std=0.02)
    raw["protocols"]["mlp"].update(epochs=3)
    changed = config.parse_params(raw)
    assert config.protocol(changed, "mlp") == dataclasses.replace(changed.train, epochs=3, record_every=1500)
    assert config.for_problem(changed, "mlp").train.batch_size == 20


def test_passwords_are_masked_in_urls():
    assert masking.mask_url("postgresql://bob:pa55@db:5432/optuna") == "postgresql://bob:***@db:5432/optuna"
    assert masking.mask_url("sqlite:///studies.db") == "sqlite:///studies.db"
    for url in ("postgresql://bob@db/optuna?password=s3cretPW", "postgresql://bob:s3c@retPW@db/optuna",
                "mysql+pymysql://bob@db/optuna?charset=utf8&passwd=s3cretPW",
                "postgresql:///optuna?host=db&user=bob&password=s3cretPW",
                "connection to server failed: host=db user=bob password=s3cretPW dbname=optuna"):
        masked = masking.mask_url(url)
        assert "s3cret" not in masked and "retPW" not in masked and "***" in masked, masked


def test_malformed_yaml_names_the_line(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  url: [unclosed\ntrain: {}\n")
    assert_one_line_error(cli("prepare", cwd=tmp_path), "params.yaml: malformed YAML at line 3")
