"""Every DoFn's type hints are ones Beam accepts when it builds a pipeline (2.78 reads them)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import apache_beam as beam
import pytest

import pipelines


def _dofn_classes() -> list[type[beam.DoFn]]:
    """Every DoFn subclass defined in a module of the pipelines package."""
    found = {}
    for info in pkgutil.walk_packages(pipelines.__path__, prefix="pipelines."):
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, beam.DoFn) and value.__module__ == info.name:
                found[value.__qualname__] = value
    return sorted(found.values(), key=lambda cls: cls.__qualname__)


def test_the_package_defines_dofns_to_check():
    names = {cls.__name__ for cls in _dofn_classes()}
    assert {"ReportProgressFn", "ExpandPatternFn"} <= names


@pytest.mark.parametrize("dofn_class", _dofn_classes(), ids=lambda cls: cls.__name__)
def test_every_dofn_has_type_hints_beam_accepts(dofn_class):
    # What ParDo does at construction: a process annotated `-> None` fails here with
    # "Return value not iterable" on Beam 2.78.
    dofn = dofn_class.__new__(dofn_class)  # hints come from the methods, not from __init__
    dofn.default_type_hints()
