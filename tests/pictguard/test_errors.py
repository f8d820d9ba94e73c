"""One exception hierarchy: every error pictguard defines derives from PictguardError, so the
CLI maps all of them to one line and an exit status without a hand-kept list."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from pipeline.errors import PictguardError

PACKAGES = ("pictguard", "pipeline", "ingest", "classify", "enforce", "validate_api")


def defined_exceptions() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            found += [
                obj
                for obj in vars(module).values()
                if inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
            ]
    return found


def test_every_defined_exception_derives_from_pictguard_error() -> None:
    exceptions = defined_exceptions()
    assert len(exceptions) > 15  # the walk found them (a broken walk must not pass)
    strays = [
        f"{e.__module__}.{e.__qualname__}" for e in exceptions if not issubclass(e, PictguardError)
    ]
    assert strays == []


@pytest.mark.parametrize("exc", defined_exceptions(), ids=lambda e: e.__qualname__)
def test_exit_statuses_are_those_the_cli_documents(exc: type[PictguardError]) -> None:
    assert exc.exit_code in (1, 2)
