"""Modules: Python packages that bring reducers, queries (and dashboards).

A module registers itself with an entry point in its ``pyproject.toml``::

    [project.entry-points."lo_stream.modules"]
    mymodule = "mymodule"

Its reducers register themselves when it is imported; its queries are the ``QUERIES`` document
of the package (see `lo_stream.query`), exported as ``<module>.<export>``; its dashboard pages are
``DASHBOARDS``, a mapping of page names to functions building a Panel page (served as
``/<module>.<name>``, see `lo_stream.dashboards`).

``pip install -e mymodule`` makes it live on the next worker start; ``lo-stream modules``
lists what is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Collection

from lo_stream.reducers import Reducer, ReducerDefinitionError, ReducerRegistry, registry

__all__ = ["ENTRY_POINT_GROUP", "Module", "ModuleLoadError", "load_modules"]

ENTRY_POINT_GROUP = "lo_stream.modules"


class ModuleLoadError(RuntimeError):
    """An installed module could not be imported or declares something wrong."""


@dataclass(frozen=True)
class Module:
    name: str
    package: str
    distribution: str
    reducers: tuple[Reducer, ...]
    queries: dict | None = None
    dashboards: dict | None = None


def load_modules(reducers: ReducerRegistry = registry, only: Collection[str] = ()) -> list[Module]:
    """Import every installed module (or `only` those named, e.g. ``LO_STREAM_MODULES``); return
    them with the reducers each one registered."""
    installed = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    missing = sorted(set(only) - {entry_point.name for entry_point in installed})
    if missing:
        raise ModuleLoadError(
            f"LO_STREAM_MODULES names {', '.join(map(repr, missing))}, which is not installed "
            f"(installed: {', '.join(ep.name for ep in installed) or 'none'}; see `lo-stream modules`)"
        )
    modules = []
    for entry_point in installed:
        if only and entry_point.name not in only:
            continue
        distribution = entry_point.dist.name if entry_point.dist else "?"
        try:
            package = entry_point.load()
        except ReducerDefinitionError as exc:
            raise ModuleLoadError(f"module {entry_point.name!r} (from {distribution}): {exc}") from None
        except Exception as exc:  # its own code failed: say whose, and how to get rid of it
            raise ModuleLoadError(
                f"module {entry_point.name!r} ({entry_point.value}, from {distribution}) failed to import: "
                f"{type(exc).__name__}: {exc}. Fix it, or remove it with: pip uninstall {distribution}"
            ) from exc
        package_name = getattr(package, "__name__", entry_point.value)
        modules.append(
            Module(
                entry_point.name, package_name, distribution, tuple(reducers.from_module(package_name)),
                getattr(package, "QUERIES", None), getattr(package, "DASHBOARDS", None),
            )
        )
    return modules
