"""Every exception citystream defines derives from CitystreamError (streams/errors.py)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import streams
from streams.errors import CitystreamError


def project_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(streams.__path__, "streams."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_project_exception_derives_from_citystream_error() -> None:
    exceptions = project_exceptions()
    assert "streams.settings.ConfigError" in exceptions and "streams.clients.influx.WriteFailed" in exceptions
    outside = sorted(name for name, cls in exceptions.items() if not issubclass(cls, CitystreamError))
    assert outside == [], outside
    assert len(exceptions) >= 12
