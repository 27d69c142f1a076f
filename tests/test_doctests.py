"""The examples in the docstrings of lo_stream (with its connectors and dashboards) and bench are true:
each module's doctests run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import bench
import lo_stream
import lo_stream.connectors
import lo_stream.dashboards

BENCH_EXTRA = {"quixstreams", "py_spy"}  # `pip install -e ".[bench]"`, not needed by make test
MODULES = sorted(
    name
    for package in (lo_stream, lo_stream.connectors, lo_stream.dashboards, bench)
    for _, name, _ in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
    if not name.endswith("__main__")  # running them is what importing them does
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in BENCH_EXTRA:
            raise
        pytest.skip(f"{name} needs the bench extra ({exc.name})")
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert failures == 0, f"{failures} docstring example(s) of {name} failed (printed above)"
