"""The pipeline's own source files a module runs: what a stage's results depend on.

A study is named by a digest of the code that computes it, and DVC reruns a stage when a file it
lists changes. Both come from here, from the stage's own imports, so a file cannot be left out of
one and not the other (tests/test_study.py holds dvc.yaml to this list).
"""
import ast
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the `pipeline` package
PACKAGE = "pipeline"


def _module_file(name: str, root: Path) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _packages(path: Path, root: Path) -> list:
    """The __init__.py of every package above `path`: Python runs each before the module."""
    found, folder = [], path.parent
    while folder != root and (folder / "__init__.py").is_file():
        found.append(folder / "__init__.py")
        folder = folder.parent
    return found


def _imports(path: Path, root: Path) -> set:
    """The package's modules that `path` imports anywhere in its body (a lazy import inside a
    function counts: it runs when the function does)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.split(".")[0] == PACKAGE and (file := _module_file(name, root)):
                found.add(file)
    return found


def imported_files(entry: Path, root: Path = ROOT) -> tuple:
    """`entry` and every file of the package it runs, transitively, sorted by path."""
    seen, todo = set(), [Path(entry)]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += [*_imports(path, root), *_packages(path, root)]
    return tuple(sorted(seen))


def digest(files, root: Path | None = None) -> str:
    """SHA-256 over each file's path (relative to root, ROOT by default) and bytes."""
    h, root = hashlib.sha256(), ROOT if root is None else root
    for path in sorted(files):
        h.update(str(Path(path).relative_to(root)).encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return h.hexdigest()
