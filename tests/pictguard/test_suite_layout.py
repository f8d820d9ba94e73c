"""The test suite's own layout rules (issue #13): folders mirror the packages, helpers live in
helper modules, and no test module imports from a conftest or from another test module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PACKAGES = ("classify", "enforce", "ingest", "pictguard", "pipeline", "validate_api")
# Folders that test across packages rather than one of them.
CROSS_CUTTING = {"fakes", "helm", "journeys", "observability", "reliability"}


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_test_folders_mirror_the_packages() -> None:
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert set(PACKAGES) <= folders, sorted(set(PACKAGES) - folders)
    assert folders - set(PACKAGES) <= CROSS_CUTTING, sorted(folders - set(PACKAGES) - CROSS_CUTTING)


def test_no_module_imports_a_conftest_or_a_test_module() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for module in _imported_modules(path):
            last = module.rsplit(".", 1)[-1]
            if module.startswith("tests") and (last == "conftest" or last.startswith("test_")):
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offenders, "\n".join(offenders)
