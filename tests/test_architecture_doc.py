"""docs/architecture.md names only what exists: every dotted ``engine`` / ``benchmarks`` / ``scdm_plugin``
name in backticks resolves, every repository path in backticks exists, and every import in its code
examples resolves. Modules of ``scdm_plugin`` need QGIS, so their names are looked up in the source's
top-level (and class-level) definitions instead of being imported."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from pathlib import Path

import pytest

from conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "architecture.md"
PACKAGES = ("engine", "benchmarks", "scdm_plugin")
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
DOTTED = re.compile(r"^((?:engine|benchmarks|scdm_plugin)(?:\.[A-Za-z_]\w*)*)(?:\(.*\))?$")
PATH = re.compile(r"^(?:engine|benchmarks|scdm_plugin|tests|docs|scripts|resources|configs|examples)(?:/[\w.-]+)+/?$")


def _prose_and_code(text: str):
    """(the text without fenced blocks, the fenced python blocks)."""
    code = [body for language, body in FENCE.findall(text) if language == "python"]
    return FENCE.sub("", text), code


def _backticked(text: str) -> list:
    return re.findall(r"`([^`\n]+)`", text)


def _definitions(body: list) -> dict:
    """{name: ast node or None} of a module's or a class's statements: functions, classes,
    assignments, imports."""
    names = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            names.update({target.id: None for target in node.targets if isinstance(target, ast.Name)})
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = None
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update({(alias.asname or alias.name).split(".")[0]: None for alias in node.names})
    return names


def _resolve_in_source(parts: list) -> None:
    """Look ``parts`` up in the plugin's sources: a module file, then names defined in it."""
    for split in range(len(parts), 0, -1):
        base = REPO_ROOT.joinpath(*parts[:split])
        source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if source.is_file():
            break
    else:
        raise LookupError(f"no module file for {'.'.join(parts)}")
    scope = _definitions(ast.parse(source.read_text(), str(source)).body)
    for name in parts[split:]:
        if name not in scope:
            raise LookupError(f"{source.relative_to(REPO_ROOT)} defines no '{name}'")
        node = scope[name]
        scope = _definitions(node.body) if isinstance(node, ast.ClassDef) else {}


def _has_member(obj, name: str) -> bool:
    """An attribute, or a member declared without a value (a dataclass field, a Protocol annotation)."""
    if hasattr(obj, name):
        return True
    if dataclasses.is_dataclass(obj) and name in {f.name for f in dataclasses.fields(obj)}:
        return True
    return any(name in getattr(klass, "__annotations__", {}) for klass in getattr(obj, "__mro__", ()))


def _submodule(package, name: str):
    """The module ``package.name``, or None when the package has no such module."""
    if not hasattr(package, "__path__"):
        return None
    full = f"{package.__name__}.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as exc:
        if exc.name != full:  # the module exists but an import inside it fails: a real failure
            raise
        return None


def _resolve_by_import(parts: list) -> None:
    """Import the package, then each part as a submodule where there is one, else as an attribute."""
    obj = importlib.import_module(parts[0])
    for name in parts[1:]:
        module = _submodule(obj, name)
        if module is not None:
            obj = module
        elif _has_member(obj, name):
            obj = getattr(obj, name, None)
        else:
            raise LookupError(f"{obj!r} has no '{name}'")


def resolve(dotted: str) -> None:
    parts = dotted.split(".")
    if parts[0] == "scdm_plugin":
        _resolve_in_source(parts)
    else:
        _resolve_by_import(parts)


def doc_references():
    prose, code = _prose_and_code(DOC.read_text())
    dotted, paths = set(), set()
    for token in _backticked(prose):
        match = DOTTED.match(token)
        if match:
            dotted.add(match.group(1))
        elif PATH.match(token):
            paths.add(token)
    for block in code:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                dotted.update(f"{node.module}.{alias.name}" for alias in node.names)
    return sorted(dotted), sorted(paths)


DOTTED_NAMES, PATHS = doc_references()


def test_the_doc_names_enough_to_be_checked():
    assert len(DOTTED_NAMES) > 60 and len(PATHS) > 20
    text = DOC.read_text()
    assert "## Extension points" in text
    for kind in ("sampler", "network architecture", "parameterisation", "output format", "tile runner"):
        assert f"### A {kind}" in text or f"### An {kind}" in text, kind


@pytest.mark.parametrize("dotted", DOTTED_NAMES)
def test_every_dotted_name_resolves(dotted):
    resolve(dotted)


@pytest.mark.parametrize("path", PATHS)
def test_every_path_exists(path):
    assert (REPO_ROOT / path).exists(), path


@pytest.mark.parametrize("missing", ["engine.raster.pipeline.no_such_function", "engine.no_such_module",
                                     "engine.settings.InferenceSettings.no_such_field",
                                     "scdm_plugin.engine_bridge.no_such_function",
                                     "scdm_plugin.algorithms.inference.SETTING_PARAMETERS.items",
                                     "scdm_plugin.no_such_module.thing"])
def test_a_name_that_does_not_exist_is_caught(missing):
    with pytest.raises(LookupError):
        resolve(missing)
