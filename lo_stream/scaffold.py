"""``lo-stream new-module NAME``: a new module package, rendered from the template shipped in
``lo_stream/module-template`` (a directory name that is no Python package, so
that setuptools ships it as plain data).

The package holds the event-counter reducer and its unit test, a query joining it with a course's
roster, a dashboard page, a README and a ``pyproject.toml`` with the ``lo_stream.modules`` entry
point, so that ``pip install -e NAME`` makes it live::

    >>> from lo_stream.scaffold import new_module
    >>> new_module("mymodule", "/tmp/work")          # doctest: +SKIP
    PosixPath('/tmp/work/mymodule')

Template files end in ``.tmpl`` and are `string.Template` texts (``$module`` is the name); a
directory called ``__module__`` becomes the package directory.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from lo_stream.modules import ENTRY_POINT_GROUP

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["ScaffoldError", "check_name", "new_module"]

TEMPLATE = files("lo_stream") / "module-template"
PACKAGE_PLACEHOLDER = "__module__"
TEMPLATE_SUFFIX = ".tmpl"
# A module's name becomes a Python package and part of Kafka topic names (its tables' changelogs).
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


class ScaffoldError(ValueError):
    """The module cannot be created as asked; the message says why and what to do."""


def check_name(name: str, directory: str | Path = ".") -> Path:
    """Return where module `name` would be created in `directory`, or raise `ScaffoldError`.

    The name must be a lowercase Python identifier, not yet a directory there, and neither an
    installed lo_stream module nor an importable Python module (which it would shadow or clash with).
    """
    if not NAME_PATTERN.fullmatch(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"module name {name!r} is not usable: use lowercase letters, digits and underscores, "
            "starting with a letter, and not a Python keyword (e.g. mymodule or typing_speed)"
        )
    target = Path(directory) / name
    if target.exists():
        raise ScaffoldError(f"{target} already exists: choose another name, or another place with --directory")
    if any(entry_point.name == name for entry_point in entry_points(group=ENTRY_POINT_GROUP)):
        raise ScaffoldError(
            f"a lo_stream module named {name!r} is already installed (see lo-stream modules): choose another name"
        )
    spec = importlib.util.find_spec(name)
    if spec is not None:
        where = spec.origin or ", ".join(spec.submodule_search_locations or []) or "built in"
        raise ScaffoldError(
            f"{name!r} is already an importable Python module ({where}): choose another name, "
            "so that importing your module does not pick up that one"
        )
    return target


def new_module(name: str, directory: str | Path = ".") -> Path:
    """Create the package `directory`/`name` from the template; return its path."""
    target = check_name(name, directory)
    _render(TEMPLATE, target, {"module": name})
    return target


def _render(source: Traversable, destination: Path, values: dict[str, str]) -> None:
    destination.mkdir(parents=True)
    for item in sorted(source.iterdir(), key=lambda entry: entry.name):
        if item.name == "__pycache__":
            continue
        name = values["module"] if item.name == PACKAGE_PLACEHOLDER else item.name.removesuffix(TEMPLATE_SUFFIX)
        if item.is_dir():
            _render(item, destination / name, values)
        else:
            (destination / name).write_text(Template(item.read_text()).substitute(values))
