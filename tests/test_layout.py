"""The package layout: every module imports, `model` depends on neither job, no import cycles,
small modules, and tests/ mirrors the product's sub-packages."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("model", "pipelines", "train_job")
MAX_MODULE_LINES = 400


def _module_name(path: pathlib.Path) -> str:
    name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


MODULES = {
    _module_name(path): path
    for package in PACKAGES
    for path in sorted((REPO_ROOT / package).rglob("*.py"))
    if "__pycache__" not in path.parts
}


def _imports(module: str) -> set[str]:
    """The project's modules that `module` imports, at its top or inside a function."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            # A name imported from a package is a module when it is one; else its package is.
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
    importlib.import_module(module)


def test_model_imports_neither_job():
    offending = {
        module: sorted(name for name in imported if not name.startswith("model"))
        for module, imported in GRAPH.items()
        if module.startswith("model")
    }
    assert {module: names for module, names in offending.items() if names} == {}


def test_no_module_imports_one_that_imports_it_back():
    pairs = sorted(
        (module, other)
        for module, imported in GRAPH.items()
        for other in imported
        if module < other and module in GRAPH.get(other, ())
    )
    assert pairs == []


def test_there_is_no_circle_of_imports():
    cycles = []
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for other in sorted(GRAPH[module]):
            if other.startswith(module + ".") or module.startswith(other + "."):
                continue  # a package and its own modules: Python's import order, not a cycle
            if state.get(other) == "open":
                cycles.append(path[path.index(other) :] + [other])
            elif other not in state:
                visit(other, path + [other])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_module_is_over_400_lines():
    long = {
        module: lines
        for module, path in MODULES.items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_the_tests_mirror_the_sub_packages():
    product = {
        path.relative_to(REPO_ROOT) for path in MODULES.values() if path.name == "__init__.py"
    }
    product_dirs = {init.parent for init in product}
    test_dirs = {
        path.parent.relative_to(REPO_ROOT / "tests")
        for path in (REPO_ROOT / "tests").rglob("test_*.py")
    }
    assert {directory for directory in test_dirs if directory.parts} <= product_dirs
    # Every sub-package with tests of its own modules has its folder of tests.
    assert {directory for directory in product_dirs if len(directory.parts) == 2} <= test_dirs
