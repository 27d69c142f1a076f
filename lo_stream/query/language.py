"""The query language: a DAG of JSON nodes, each with a ``dispatch`` field.

A query document::

    {"execution_dag": {"roster": {"dispatch": "call", "function_name": "lo_stream.roster",
                                  "args": [{"dispatch": "parameter", "parameter_name": "course_id"}]},
                       "counts": ...},
     "exports": {"counts": {"returns": "counts", "parameters": ["course_id"]}}}

Node types (written here as the Python builders that produce them):

- ``parameter(name, required=True, default=None)``: a value the caller supplies;
- ``variable(name)``: the output of another node of the DAG;
- ``call(function, *args, **kwargs)``: a function published with `lo_stream.query.published`;
- ``keys(reducer, student=(values, path), doc_id=(values, path), ...)``: the table keys of a
  reducer, one per element of the scope values (several dimensions pair element by element; an
  element without a value at the path, e.g. a student with no document yet, gives no key);
- ``select(keys, fields)``: the values at those keys; ``fields`` is ``"all"``, ``"none"`` or a
  mapping of dotted paths in the state to output names;
- ``join(left, right, left_on, right_on)``: a left join on dotted paths;
- ``map_values(function, values, value_path=None, **func_kwargs)``: a published function applied to
  each item (or to the value at ``value_path`` of each item).

`validate` checks a document before anything runs and names the node at fault.
"""

from __future__ import annotations

from typing import Any, Iterator

__all__ = [
    "DISPATCHES",
    "QueryError",
    "call",
    "join",
    "keys",
    "map_values",
    "node_references",
    "parameter",
    "parameters_of",
    "select",
    "validate",
    "variable",
]

# The fields each node type requires, and those it may have.
DISPATCHES: dict[str, tuple[set[str], set[str]]] = {
    "parameter": ({"parameter_name"}, {"required", "default"}),
    "variable": ({"variable_name"}, set()),
    "call": ({"function_name"}, {"args", "kwargs"}),
    "keys": ({"reducer", "scope"}, set()),
    "select": ({"keys"}, {"fields"}),
    "join": ({"left", "right", "left_on", "right_on"}, set()),
    "map": ({"function_name", "values"}, {"value_path", "func_kwargs"}),
}


class QueryError(ValueError):
    """A query that cannot run: `node` names where (when known), the message what and why."""

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node

    def as_json(self) -> dict:
        return {"error": str(self), "node": self.node}


# -- builders ------------------------------------------------------------------------------------


def parameter(name: str, *, required: bool = True, default: Any = None) -> dict:
    return {"dispatch": "parameter", "parameter_name": name, "required": required, "default": default}


def variable(name: str) -> dict:
    return {"dispatch": "variable", "variable_name": name}


def call(function_name: str, *args: Any, **kwargs: Any) -> dict:
    return {"dispatch": "call", "function_name": function_name, "args": list(args), "kwargs": kwargs}


def keys(reducer: str, **scope: tuple[Any, str | None]) -> dict:
    """``keys("lo_stream.writing.text", student=(variable("roster"), "safe_user_id"),
    doc_id=(variable("docs"), "value.last_document"))``"""
    return {
        "dispatch": "keys",
        "reducer": reducer,
        "scope": {name: {"values": values, "path": path} for name, (values, path) in scope.items()},
    }


def select(keys_node: Any, fields: str | dict[str, str] = "all") -> dict:
    return {"dispatch": "select", "keys": keys_node, "fields": fields}


def join(left: Any, right: Any, left_on: str, right_on: str) -> dict:
    return {"dispatch": "join", "left": left, "right": right, "left_on": left_on, "right_on": right_on}


def map_values(function_name: str, values: Any, value_path: str | None = None, **func_kwargs: Any) -> dict:
    return {
        "dispatch": "map", "function_name": function_name, "values": values,
        "value_path": value_path, "func_kwargs": func_kwargs,
    }


# -- validation ----------------------------------------------------------------------------------


def _nodes_in(value: Any) -> Iterator[dict]:
    """Every node object inside a node's arguments (nodes nest: a variable inside a call's args)."""
    if isinstance(value, dict):
        if "dispatch" in value:
            yield value
        else:
            for inner in value.values():
                yield from _nodes_in(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _nodes_in(inner)


def node_references(node: dict) -> Iterator[dict]:
    """The nodes a node's fields hold (not the node itself), depth first."""
    for field, value in node.items():
        if field == "dispatch":
            continue
        for inner in _nodes_in(value):
            yield inner
            yield from node_references(inner)


def _check_node(node: Any, where: str, functions: set[str], reducers: set[str]) -> None:
    if not isinstance(node, dict) or "dispatch" not in node:
        raise QueryError("a node must be an object with a 'dispatch' field", where)
    kind = node["dispatch"]
    if kind not in DISPATCHES:
        raise QueryError(f"unknown node type {kind!r}; known: {', '.join(sorted(DISPATCHES))}", where)
    required, optional = DISPATCHES[kind]
    missing = required - set(node)
    if missing:
        raise QueryError(f"a {kind} node needs {', '.join(sorted(missing))}", where)
    unknown = set(node) - required - optional - {"dispatch"}
    if unknown:
        raise QueryError(f"a {kind} node has no field {', '.join(sorted(unknown))}", where)
    if kind in ("call", "map") and node["function_name"] not in functions:
        raise QueryError(
            f"function {node['function_name']!r} is not published (only published functions can run)", where
        )
    if kind == "keys":
        if node["reducer"] not in reducers:
            raise QueryError(f"no reducer {node['reducer']!r} is installed (see lo-stream modules)", where)
        if not isinstance(node["scope"], dict) or not node["scope"]:
            raise QueryError("a keys node needs a scope: {dimension: {values, path}}", where)
    if kind == "select":
        fields = node.get("fields", "all")
        if fields not in ("all", "none") and not (
            isinstance(fields, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
        ):
            raise QueryError('fields must be "all", "none" or a mapping of dotted paths to names', where)


def validate(document: Any, *, functions: set[str], reducers: set[str]) -> None:
    """Check a query document: node types and fields, published functions, installed reducers,
    variables that exist, no cycles, exports that return a node. Raises `QueryError`."""
    if not isinstance(document, dict) or not isinstance(document.get("execution_dag"), dict):
        raise QueryError('a query is {"execution_dag": {name: node, ...}, "exports": {...}}')
    dag = document["execution_dag"]
    edges: dict[str, set[str]] = {}
    for name, node in dag.items():
        _check_node(node, name, functions, reducers)
        edges[name] = set()
        for inner in node_references(node):
            _check_node(inner, name, functions, reducers)
            if inner["dispatch"] == "variable":
                target = inner["variable_name"]
                if target not in dag:
                    raise QueryError(f"variable {target!r} names no node of the DAG", name)
                edges[name].add(target)
        if node["dispatch"] == "variable":
            if node["variable_name"] not in dag:
                raise QueryError(f"variable {node['variable_name']!r} names no node of the DAG", name)
            edges[name].add(node["variable_name"])
    _check_acyclic(edges)
    exports = document.get("exports", {})
    if not isinstance(exports, dict):
        raise QueryError('"exports" must map export names to {"returns": node, "parameters": [...]}')
    for export_name, export in exports.items():
        if not isinstance(export, dict) or export.get("returns") not in dag:
            raise QueryError(f"export {export_name!r} must return a node of the DAG", export_name)


def _check_acyclic(edges: dict[str, set[str]]) -> None:
    done: set[str] = set()
    for start in edges:
        path: list[str] = []
        on_path: set[str] = set()

        def visit(name: str) -> None:
            if name in done:
                return
            if name in on_path:
                cycle = path[path.index(name):] + [name]
                raise QueryError(f"the DAG has a cycle: {' -> '.join(cycle)}", name)
            on_path.add(name)
            path.append(name)
            for target in edges[name]:
                visit(target)
            path.pop()
            on_path.discard(name)
            done.add(name)

        visit(start)


def parameters_of(document: dict, returns: str | None = None) -> dict[str, dict]:
    """The parameter nodes, by parameter name, that node `returns` depends on (all of the
    document's when None)."""
    dag = document["execution_dag"]
    pending = [returns] if returns is not None else list(dag)
    seen: set[str] = set()
    found: dict[str, dict] = {}
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for inner in [dag[name], *node_references(dag[name])]:
            if inner.get("dispatch") == "parameter":
                found[inner["parameter_name"]] = inner
            elif inner.get("dispatch") == "variable":
                pending.append(inner["variable_name"])
    return found
