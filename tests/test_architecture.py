"""The package's shape: small modules, imports one way (command line -> stages -> core), and only
the public API of Optuna and MLflow. Read from the source with Python's own parser."""
import ast
from pathlib import Path

import pytest

from pipeline.core import problems
from conftest import ROOT

SOURCES = sorted((ROOT / "pipeline").rglob("*.py"))
PUBLIC_UNDERSCORED = {"_replace", "_asdict", "_fields", "_exit"}  # NamedTuple's API, os._exit


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def imported_modules(module: ast.Module) -> list:
    found = []
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_300_lines(path):
    assert len(path.read_text().splitlines()) <= 300


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_of_optuna_or_mlflow(path):
    module = tree(path)
    private_imports = [m for m in imported_modules(module) if m.split(".")[0] in ("optuna", "mlflow")
                       and any(part.startswith("_") for part in m.split("."))]
    assert not private_imports, private_imports
    # Any `x._name` outside the object's own class (self/cls) is someone else's private name.
    private_attrs = [f"line {n.lineno}: {ast.unparse(n)}" for n in ast.walk(module)
                     if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
                     and n.attr not in PUBLIC_UNDERSCORED
                     and not (isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"))]
    assert not private_attrs, private_attrs


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_from_the_command_line_to_stages_to_core(path):
    layer = path.relative_to(ROOT / "pipeline").parts[0]
    ours = [m for m in imported_modules(tree(path)) if m.startswith("pipeline.")]
    if layer == "core":
        assert not [m for m in ours if m.startswith(("pipeline.stages", "pipeline.cli"))], ours
    if layer == "stages":
        assert not [m for m in ours if m.startswith("pipeline.cli")], ours
        stage = path.relative_to(ROOT / "pipeline" / "stages").parts[0].removesuffix(".py")
        others = {m.split(".")[2] for m in ours if m.startswith("pipeline.stages.")} - {stage}
        assert not others, f"{stage} imports the stages {others}: share it through pipeline.core instead"


def test_the_detector_sees_a_private_name(tmp_path):
    """The check above would catch what storage.py used to do."""
    bad = ast.parse("from optuna.storages._heartbeat import is_heartbeat_enabled\nstudy._storage.get_trial(t._trial_id)")
    assert "optuna.storages._heartbeat" in imported_modules(bad)
    assert sum(isinstance(n, ast.Attribute) and n.attr.startswith("_") for n in ast.walk(bad)) == 2


WORKLOADS = {"problems.py", "workloads.py", "deep_quadratic.py", "classifier.py"}  # the registry and the workloads


@pytest.mark.parametrize("path", [p for p in SOURCES if p.name not in WORKLOADS], ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_workloads_know_a_kind_of_problem(path):
    """The engine and the stages ask a workload; none reads its layers, names a problem to branch
    on, or defaults a problem argument (a forgotten one would silently train the wrong model)."""
    module = tree(path)
    found = [f"line {n.lineno}: {ast.unparse(n)}" for n in ast.walk(module)
             if isinstance(n, ast.Attribute) and n.attr in ("hidden", "activation")
             or isinstance(n, ast.Compare) and any(isinstance(c, ast.Constant) and c.value in problems.PROBLEMS
                                                   for c in [n.left, *n.comparators])]
    for fn in (n for n in ast.walk(module) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        positional = fn.args.args[len(fn.args.args) - len(fn.args.defaults):]
        found += [f"line {fn.lineno}: {fn.name}({a.arg}=...)" for a in [*positional, *fn.args.kwonlyargs]
                  if a.arg == "problem"
                  and (a in positional or fn.args.kw_defaults[fn.args.kwonlyargs.index(a)] is not None)]
    assert not found, found
