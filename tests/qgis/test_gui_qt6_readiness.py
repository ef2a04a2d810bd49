"""QGIS 4 (Qt 6) readiness: the QGIS project's PyQt5 -> PyQt6 migration check passes, QGIS's own enums
are written fully scoped, Qt is imported only through qgis.PyQt, and metadata.txt declares Qt 6
support while the plugin still loads in QGIS 3.22 (tests/qgis/test_registration.py)."""

from __future__ import annotations

import ast
import configparser
import subprocess
from pathlib import Path

import pytest

from scdm_testing import REPO_ROOT

CHECK = REPO_ROOT / "scripts" / "pyqt6_check.sh"
# The Python that QGIS 4 loads or runs against QGIS: the plugin, the scripts and the tests.
CODE = [REPO_ROOT / "__init__.py", *(path for folder in ("scdm_plugin", "engine", "scripts", "tests")
                                     for path in sorted((REPO_ROOT / folder).rglob("*.py")))]


def _run_check(*paths) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CHECK), *map(str, paths)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def test_the_qgis_pyqt5_to_pyqt6_migration_check_passes():
    result = _run_check()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "need no PyQt6 migration" in result.stdout


def test_the_migration_check_fails_on_code_that_needs_migrating(tmp_path):
    (tmp_path / "old_style.py").write_text("from PyQt5.QtCore import Qt\nfrom qgis.PyQt.QtWidgets import QDialog\n"
                                           "QDialog().exec_()\nalignment = Qt.AlignLeft\n")
    result = _run_check(tmp_path)
    assert result.returncode == 1
    for change in ("-QDialog().exec_()", "+QDialog().exec()", "+alignment = Qt.AlignmentFlag.AlignLeft",
                   "+from qgis.PyQt.QtCore import Qt"):
        assert change in result.stdout, result.stdout


def unscoped_qgis_enums(source: str) -> list:
    """``QgsClass.Member`` where ``Member`` belongs to an enum of that class (``QgsClass.Enum.Member`` is
    the form PyQt6 needs): checked against the QGIS classes installed, as the QGIS migration script
    does when it can introspect QGIS (it cannot beside PyQt6 from PyPI)."""
    import qgis.core
    import qgis.gui

    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        owner = getattr(qgis.core, node.value.id, None) or getattr(qgis.gui, node.value.id, None)
        value = getattr(owner, node.attr, None) if isinstance(owner, type) else None
        if value is None or isinstance(value, type) or callable(value):
            continue
        enum = type(value)
        if enum is not owner and getattr(owner, enum.__name__, None) is enum:
            name = node.value.id
            found.append(f"line {node.lineno}: {name}.{node.attr} -> {name}.{enum.__name__}.{node.attr}")
    return found


def test_the_enum_check_finds_an_unscoped_qgis_enum():
    source = ("from qgis.core import QgsProcessingParameterNumber, QgsProcessing\n"
              "a = QgsProcessingParameterNumber.Integer\nb = QgsProcessingParameterNumber.Type.Double\n"
              "c = QgsProcessing.TEMPORARY_OUTPUT\n")
    assert unscoped_qgis_enums(source) == [
        "line 2: QgsProcessingParameterNumber.Integer -> QgsProcessingParameterNumber.Type.Integer"]


@pytest.mark.parametrize("path", CODE, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_qgis_enums_are_fully_scoped_and_qt_comes_through_qgis_pyqt(path: Path):
    source = path.read_text(encoding="utf-8")
    assert unscoped_qgis_enums(source) == []
    for node in ast.walk(ast.parse(source)):
        modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        direct = [m for m in modules if m.split(".")[0] in ("PyQt5", "PyQt6", "sip", "PyQt5.sip")]
        assert not direct, f"line {node.lineno}: import {direct} through qgis.PyQt instead"
        if isinstance(node, ast.Attribute):
            assert node.attr != "exec_", f"line {node.lineno}: exec_() is exec() in PyQt6"


def test_metadata_declares_qt6_support_up_to_qgis_4():
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    assert general["supportsQt6"] == "True"
    assert general["qgisMinimumVersion"] == "3.22" and general["qgisMaximumVersion"] == "4.99"
