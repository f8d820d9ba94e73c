"""Dependencies point down only: ``pictguard/`` → roles → ``pipeline/``.

Every import counts, including the lazy ones inside functions, which is how a layering
violation hides (and how import loops were dodged before the composition root existed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("ingest", "classify", "enforce", "validate_api")


def imported_packages(folder: Path) -> dict[str, set[str]]:
    """Top-level package of every import under ``folder``, per importing file."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(folder.parent))] = names
    return found


def offenders(package: str, forbidden: set[str], root: Path = ROOT) -> list[str]:
    return [
        f"{file} imports {', '.join(sorted(names & forbidden))}"
        for file, names in imported_packages(root / package).items()
        if names & forbidden
    ]


def test_the_foundation_imports_no_role_and_not_the_root() -> None:
    assert offenders("pipeline", {*ROLES, "pictguard"}) == []


@pytest.mark.parametrize("role", ROLES)
def test_a_role_never_imports_the_composition_root(role: str) -> None:
    assert offenders(role, {"pictguard"}) == []


@pytest.mark.parametrize("role", ROLES)
def test_roles_meet_only_through_the_foundation(role: str) -> None:
    """Roles talk to each other through ``pipeline``'s contracts, never by importing."""
    assert offenders(role, set(ROLES) - {role}) == []


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    """An import inside a function body, the way a violation hides, is found."""
    (tmp_path / "ingest").mkdir()
    (tmp_path / "ingest" / "x.py").write_text("def f():\n    from enforce.admin import X\n")
    assert offenders("ingest", {"enforce"}, root=tmp_path) == ["ingest/x.py imports enforce"]
