"""Imports point down the layers of docs/architecture.md: a module may import its own package and the packages of
lower layers, never a package of its own layer or above. Read from the source (every `import` / `from` statement,
including those inside functions), so an upward import fails here even where it is only executed on first use."""

import ast
import os

import pytest


ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "trl_laser")

LAYERS = {
    "_version": 0,
    "core": 0,  # the score: LaSeR math, readout, read during generation, token choice, recipe
    "demo_model": 0,
    "tasks": 1,
    "training": 2,
    "scoring": 2,
    "correction": 3,
    "evaluation": 4,
    "cli": 5,
    "testing": 5,
    "__init__": 6,
    "__main__": 6,
}
"""Layer of each top-level package or module of `trl_laser` (as in docs/architecture.md)."""


PACKAGES = {
    name.removesuffix(".py")
    for name in os.listdir(ROOT)
    if name.endswith(".py") or os.path.isdir(os.path.join(ROOT, name))
}
"""The modules and packages directly inside `trl_laser`."""


def top_level(path: str) -> str:
    relative = os.path.relpath(path, ROOT)
    return relative.split(os.sep)[0].removesuffix(".py")


def imported_packages(path: str) -> set[tuple[str, int]]:
    """The `trl_laser` top-level packages a module imports, with the line of each import."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = os.path.relpath(os.path.dirname(path), os.path.dirname(ROOT)).split(os.sep)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package[: len(package) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
                names = [target] if node.module else [[*base, alias.name] for alias in node.names]
            elif node.module and node.module.split(".")[0] == "trl_laser":
                names = [node.module.split(".")]
            else:
                continue
            for name in names:
                if len(name) > 1 and name[1] in PACKAGES:
                    found.add((name[1], node.lineno))
                else:  # a name of the root package itself (`from trl_laser import X`, `from .. import __version__`)
                    found.add(("__init__", node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "trl_laser":
                    found.add((parts[1] if len(parts) > 1 else "__init__", node.lineno))
    return found


def modules():
    for directory, _, files in os.walk(ROOT):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


@pytest.mark.parametrize("path", list(modules()), ids=lambda p: os.path.relpath(p, ROOT))
def test_imports_point_down_the_layers(path):
    own = top_level(path)
    assert own in LAYERS, f"{own} has no layer: add it to docs/architecture.md and LAYERS"
    for package, line in imported_packages(path):
        if package == own:
            continue
        assert LAYERS[package] < LAYERS[own], (
            f"{os.path.relpath(path, ROOT)}:{line} imports {package} (layer {LAYERS[package]}) from {own} "
            f"(layer {LAYERS[own]}): imports must point down the layers of docs/architecture.md."
        )


def test_the_core_imports_nothing_else_of_the_package():
    for path in modules():
        if top_level(path) == "core":
            assert {p for p, _ in imported_packages(path)} <= {"core"}, path


def test_a_name_of_the_root_package_counts_as_an_import_of_the_top_layer(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import trl_laser\nfrom trl_laser import LaSeRConfig\nfrom trl_laser.core import readout\n")
    assert imported_packages(str(module)) == {("__init__", 1), ("__init__", 2), ("core", 3)}


def test_no_import_on_first_use():
    """A module-level `__getattr__` would hide an import cycle behind lazy loading."""
    for path in modules():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        assert not any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body), path
