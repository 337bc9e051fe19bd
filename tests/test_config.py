"""params.yaml is validated once, with one-line messages that name the key and the fix."""
import pytest
import yaml

from pipeline import config
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
    (lambda p: p["book"].update(adam={"lr": 0.1}), "unknown optimizer 'adam'"),
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
    (lambda p: p["study"]["search_space"].pop("gamma"), "rmsprop needs a range for gamma"),
    (lambda p: p["study"]["search_space"]["lr"].update(scale="exp"), "study.search_space.lr.scale: expected one of"),
])
def test_bad_params_stop_the_command_in_one_line_naming_the_key(edit, expected, tmp_path):
    raw = raw_params()
    edit(raw)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert_one_line_error(cli("study", "sgd", cwd=tmp_path), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing else written


def test_passwords_are_masked_in_urls():
    assert config.mask_url("postgresql://bob:pa55@db:5432/optuna") == "postgresql://bob:***@db:5432/optuna"
    assert config.mask_url("sqlite:///studies.db") == "sqlite:///studies.db"


def test_malformed_yaml_names_the_line(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  url: [unclosed\ntrain: {}\n")
    assert_one_line_error(cli("prepare", cwd=tmp_path), "params.yaml: malformed YAML at line 3")
