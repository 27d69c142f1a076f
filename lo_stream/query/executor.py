"""Running a query: evaluate the nodes an export needs, read tables, apply access rules.

Responsibilities:

1. evaluate nodes on demand, each once per run, in dependency order;
2. read table values in one request per reducer (the reader routes keys to their workers);
3. give every selected item its provenance: reducer id and version, key, the event's offset;
4. enforce who may see what: a teacher reads only the courses they teach and the students on
   their rosters; an admin reads everything;
5. for live subscriptions, re-run a query for just some students (``restrict_students``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from lo_stream.query.functions import FunctionRegistry, functions as published_functions
from lo_stream.query.language import QueryError, node_references, parameters_of
from lo_stream.reducers import STUDENT, Reducer, scope_key

__all__ = ["AccessDenied", "Caller", "Execution", "MissingPath", "TableReader", "Unavailable", "get_path"]


class AccessDenied(QueryError):
    """The caller may not see what the query asks for."""


class Unavailable(QueryError):
    """The worker cannot answer now (starting, rebalancing); try again shortly."""


class TableReader(Protocol):
    async def read(self, reducer: Reducer, keys: list[str]) -> dict[str, dict | None]:
        """The stored value (``{"state", "offset", "partition", ...}``) of each key, None if absent."""


class RosterSource(Protocol):
    def students(self, course_id: str) -> list[dict] | None: ...

    def course_ids(self) -> list[str]: ...

    def courses_taught_by(self, teacher: str) -> list[str]: ...


@dataclass(frozen=True)
class Caller:
    """Who runs a query. `courses` are those the users file gives a teacher (the courses topic
    adds those naming them as a teacher)."""

    name: str
    role: str  # "teacher" or "admin"
    courses: frozenset[str] = field(default_factory=frozenset)
    via: str | None = None  # the admin service asking on this user's behalf

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class MissingPath(LookupError):
    pass


def get_path(value: Any, path: str | None) -> Any:
    """The value at a dotted path (``"profile.name.0"``); `MissingPath` when it is not there."""
    if not path:
        return value
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            raise MissingPath(path)
    return value


class Execution:
    """One run of one query document for one caller."""

    def __init__(
        self,
        document: dict,
        params: dict[str, Any],
        *,
        reader: TableReader,
        rosters: RosterSource,
        reducers: dict[str, Reducer],
        caller: Caller,
        functions: FunctionRegistry = published_functions,
        restrict_students: set[str] | None = None,
    ) -> None:
        self.dag = document["execution_dag"]
        self.params = params
        self.reader = reader
        self.rosters = rosters
        self.reducers = reducers
        self.caller = caller
        self.functions = functions
        self.restrict_students = restrict_students
        self.outputs: dict[str, Any] = {}
        self.students_read: set[str] = set()  # for the audit record
        self._allowed_students: set[str] | None = None

    # -- access -----------------------------------------------------------------------------

    def courses(self) -> set[str]:
        if self.caller.is_admin:
            return set(self.rosters.course_ids())
        return set(self.caller.courses) | set(self.rosters.courses_taught_by(self.caller.name))

    def roster(self, course_id: str) -> list[dict]:
        if not isinstance(course_id, str) or not course_id:
            raise QueryError("a course id must be a non-empty string")
        if not self.caller.is_admin and course_id not in self.courses():
            raise AccessDenied(f"{self.caller.name} does not teach course {course_id!r}")
        students = self.rosters.students(course_id)
        if students is None:
            raise QueryError(f"course {course_id!r} has no roster (load one: lo-stream rosters load FILE --course ID)")
        return students

    def _check_students(self, students: Iterable[str]) -> None:
        if self.caller.is_admin:
            return
        if self._allowed_students is None:
            self._allowed_students = {
                student["safe_user_id"]
                for course_id in self.courses()
                for student in self.rosters.students(course_id) or []
            }
        for student in students:
            if student not in self._allowed_students:
                raise AccessDenied(f"student {student!r} is on none of {self.caller.name}'s rosters")

    # -- evaluation -------------------------------------------------------------------------

    async def run_node(self, name: str) -> Any:
        if name not in self.outputs:
            self.outputs[name] = await self.evaluate(self.dag[name], name)
        return self.outputs[name]

    async def run(self, returns: str) -> Any:
        """Check the parameters node `returns` needs, then evaluate it."""
        expected = parameters_of({"execution_dag": self.dag}, returns)
        unknown = set(self.params) - set(expected)
        if unknown:
            raise QueryError(
                f"unknown parameter {', '.join(sorted(unknown))}; this query takes: "
                f"{', '.join(sorted(expected)) or 'none'}", returns,
            )
        for name, node in expected.items():
            if node.get("required", True) and name not in self.params:
                raise QueryError(f"missing required parameter {name!r}", self._node_of_parameter(name))
        return await self.run_node(returns)

    def _node_of_parameter(self, name: str) -> str | None:
        for node_name, node in self.dag.items():
            for inner in [node, *node_references(node)]:
                if inner.get("dispatch") == "parameter" and inner["parameter_name"] == name:
                    return node_name
        return None

    async def evaluate(self, node: Any, where: str) -> Any:
        """The value of a node, or of a literal (lists and objects may hold nodes)."""
        if isinstance(node, list):
            return [await self.evaluate(item, where) for item in node]
        if not isinstance(node, dict):
            return node
        if "dispatch" not in node:
            return {key: await self.evaluate(value, where) for key, value in node.items()}
        handler = getattr(self, f"_{node['dispatch']}")
        return await handler(node, where)

    async def _parameter(self, node: dict, where: str) -> Any:
        name = node["parameter_name"]
        if name in self.params:
            return self.params[name]
        if node.get("required", True):
            raise QueryError(f"missing required parameter {name!r}", where)
        return node.get("default")

    async def _variable(self, node: dict, where: str) -> Any:
        return await self.run_node(node["variable_name"])

    async def _call(self, node: dict, where: str) -> Any:
        function = self.functions[node["function_name"]]
        args = await self.evaluate(node.get("args", []), where)
        kwargs = await self.evaluate(node.get("kwargs", {}), where)
        try:
            result = await function(self, *args, **kwargs)
        except QueryError as exc:
            raise type(exc)(str(exc), exc.node or where) from None
        except Exception as exc:
            raise QueryError(f"{node['function_name']} raised {type(exc).__name__}: {exc}", where) from None
        if function.student_rows and self.restrict_students is not None:
            result = [row for row in result if row.get("safe_user_id") in self.restrict_students]
        return result

    async def _keys(self, node: dict, where: str) -> list[dict]:
        reducer = self.reducers.get(node["reducer"])
        if reducer is None:
            raise QueryError(f"no reducer {node['reducer']!r} is installed", where)
        scope = node["scope"]
        if set(scope) != set(reducer.scope):
            raise QueryError(
                f"{reducer.id} is keyed by {', '.join(reducer.scope)}; the keys node gives {', '.join(scope)}", where
            )
        columns = []
        for dimension in reducer.scope:
            values = await self.evaluate(scope[dimension]["values"], where)
            if not isinstance(values, list):
                raise QueryError(f"the {dimension} values must be a list, not {type(values).__name__}", where)
            columns.append([self._scope_value(value, scope[dimension].get("path"), dimension) for value in values])
        lengths = {len(column) for column in columns}
        if len(lengths) > 1:
            counts = ", ".join(f"{d}: {len(c)}" for d, c in zip(reducer.scope, columns))
            raise QueryError(f"scope dimensions pair element by element, but their lengths differ ({counts})", where)
        items = []
        for row in zip(*columns):
            if any(isinstance(value, MissingPath) for value in row):
                continue  # e.g. a student with no document yet: no key to read
            items.append({"reducer": reducer.id, "scope": dict(zip(reducer.scope, row)), "key": scope_key([str(v) for v in row])})
        if STUDENT in reducer.scope:
            self._check_students(item["scope"][STUDENT] for item in items)
        return items

    @staticmethod
    def _scope_value(value: Any, path: str | None, dimension: str) -> Any:
        try:
            found = get_path(value, path)
        except MissingPath as missing:
            return missing
        return found if found is not None else MissingPath(path or dimension)

    async def _select(self, node: dict, where: str) -> list[dict]:
        items = await self.evaluate(node["keys"], where)
        fields = node.get("fields", "all")
        by_reducer: dict[str, list[str]] = {}
        for item in items:
            by_reducer.setdefault(item["reducer"], []).append(item["key"])
        stored: dict[tuple[str, str], dict | None] = {}
        for reducer_id, reducer_keys in by_reducer.items():
            values = await self.reader.read(self.reducers[reducer_id], reducer_keys)
            stored.update({(reducer_id, key): value for key, value in values.items()})
        results = []
        for item in items:
            reducer = self.reducers[item["reducer"]]
            entry = stored.get((reducer.id, item["key"]))
            state = entry["state"] if entry else reducer.initial_state()
            if STUDENT in item["scope"]:
                self.students_read.add(item["scope"][STUDENT])
            result: dict[str, Any] = {"key": item["scope"]}
            if fields == "all":
                result["value"] = state
            elif isinstance(fields, dict):
                try:
                    result.update({name: get_path(state, path) for path, name in fields.items()})
                except MissingPath as missing:
                    result = {"key": item["scope"], "error": f"no {missing.args[0]!r} in the state of {reducer.id}"}
            result["provenance"] = [
                {
                    "reducer": reducer.id,
                    "version": reducer.version,
                    "key": item["key"],
                    "offset": entry["offset"] if entry else None,
                    "partition": entry["partition"] if entry else None,
                }
            ]
            results.append(result)
        return results

    async def _join(self, node: dict, where: str) -> list[dict]:
        left = await self.evaluate(node["left"], where)
        right = await self.evaluate(node["right"], where)
        if not isinstance(left, list) or not isinstance(right, list):
            raise QueryError("join needs two lists", where)
        index: dict[Any, dict] = {}
        for item in right:
            try:
                index.setdefault(_hashable(get_path(item, node["right_on"])), item)
            except MissingPath:
                continue  # a right item without the field matches nothing
        joined = []
        for item in left:
            try:
                match = index.get(_hashable(get_path(item, node["left_on"])))
            except MissingPath:
                match = None
            if match is None or not isinstance(item, dict) or not isinstance(match, dict):
                joined.append(item)
                continue
            merged = {**match, **item}
            if "provenance" in match and "provenance" in item:
                merged["provenance"] = item["provenance"] + match["provenance"]
            joined.append(merged)
        return joined

    async def _map(self, node: dict, where: str) -> list:
        function = self.functions[node["function_name"]]
        values = await self.evaluate(node["values"], where)
        if not isinstance(values, list):
            raise QueryError("map needs a list of values", where)
        kwargs = await self.evaluate(node.get("func_kwargs") or {}, where)
        results = []
        for item in values:
            try:
                value = get_path(item, node.get("value_path"))
            except MissingPath as missing:
                results.append({"error": f"no {missing.args[0]!r} in this item", "item": item})
                continue
            try:
                results.append(await function(self, value, **kwargs))
            except Exception as exc:
                results.append({"error": f"{node['function_name']} raised {type(exc).__name__}: {exc}", "item": item})
        return results


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
