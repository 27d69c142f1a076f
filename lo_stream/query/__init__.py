"""The query layer: a JSON DAG language over reducer tables and rosters, its executor, and the
HTTP and websocket API every worker serves.

Build a query in Python (the builders write the same JSON a client may send)::

    from lo_stream.query import call, join, keys, parameter, query, select, variable

    QUERIES = query(
        {
            "roster": call("lo_stream.roster", parameter("course_id")),
            "counts": select(keys("mymodule.event_counter", student=(variable("roster"), "safe_user_id")),
                             {"count": "events"}),
            "overview": join(variable("counts"), variable("roster"), "key.student", "safe_user_id"),
        },
        exports={"overview": "overview"},
    )

or, for the common case, ``QUERIES = course_query("mymodule.event_counter", {"count": "events"})``.
"""

from __future__ import annotations

from typing import Any

from lo_stream.query.functions import published
from lo_stream.query.language import (
    QueryError,
    call,
    join,
    keys,
    map_values,
    parameter,
    select,
    variable,
)

__all__ = [
    "QueryError",
    "call",
    "combine",
    "course_query",
    "join",
    "keys",
    "map_values",
    "parameter",
    "published",
    "query",
    "select",
    "variable",
]


def query(nodes: dict[str, dict], exports: dict[str, str | dict[str, Any]]) -> dict:
    """A query document: named nodes, and exports naming the node each returns
    (``{"overview": "overview"}`` or ``{"overview": {"returns": "overview", "description": ...}}``)."""
    return {
        "execution_dag": dict(nodes),
        "exports": {
            name: {"returns": export} if isinstance(export, str) else dict(export) for name, export in exports.items()
        },
    }


def combine(*documents: dict) -> dict:
    """One document holding the nodes and exports of several (names must not collide)."""
    combined: dict[str, dict] = {"execution_dag": {}, "exports": {}}
    for document in documents:
        for part in ("execution_dag", "exports"):
            clash = set(combined[part]) & set(document[part])
            if clash:
                raise QueryError(f"{part} named {', '.join(sorted(clash))} appear in two documents")
            combined[part].update(document[part])
    return combined


def course_query(reducer: str, fields: str | dict[str, str] = "all", *, name: str | None = None) -> dict:
    """The everyday query: `reducer`'s value for every student on a course's roster, joined with
    the roster (names, e-mail, photo). Students with no events yet get the reducer's starting
    state. The export is named after the reducer's function unless `name` is given; it takes the
    parameter ``course_id``."""
    name = name or reducer.rsplit(".", 1)[-1]
    return query(
        {
            f"{name}.roster": call("lo_stream.roster", parameter("course_id")),
            f"{name}.values": select(keys(reducer, student=(variable(f"{name}.roster"), "safe_user_id")), fields),
            name: join(variable(f"{name}.values"), variable(f"{name}.roster"), "key.student", "safe_user_id"),
        },
        exports={name: {"returns": name, "description": f"{reducer} for every student of a course, with the roster"}},
    )
