"""The researcher's API: a reducer is a small function from (event, state) to the next state.

    from lo_stream import student_event_reducer

    @student_event_reducer(null_state={"count": 0})
    async def student_event_counter(event, state):
        return {"count": state["count"] + 1}

The decorator registers the reducer once, with everything lo_stream needs to run it: its id
(``<python module>.<function>``), its scope (what its state is keyed by), the events it wants,
its version, and its starting state. The function itself is returned unchanged, so it can be
unit-tested by calling it.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Awaitable, Callable, Iterable, Iterator, Sequence, Union

import orjson

from lo_stream.envelopes import student_of

__all__ = [
    "PLAIN_STATES",
    "STUDENT",
    "UNCHANGED",
    "DuplicateReducerError",
    "Reducer",
    "ReducerDefinitionError",
    "ReducerRegistry",
    "event_reducer",
    "registry",
    "scope_key",
    "student_event_reducer",
]

STUDENT = "student"
"""The scope field naming the student: the envelope's ``metadata.auth.safe_user_id``."""

PLAIN_STATES = frozenset({dict, list, str, int, float, bool, type(None)})
"""Types of a function's result that are the next state as they are (no awaitable, no pair)."""


class _Unchanged:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()
"""What a reducer returns for an event that changes nothing: the state stays as it is and nothing
is written (no table write, no changelog record, no change for live queries). Learning
Observer's reducers say the same by returning ``False`` as their internal state. The reducer must
be a pure function of (event, state), as every reducer must be for replay."""

ReducerFunction = Callable[[dict, Any], Union[Any, Awaitable[Any]]]


class ReducerDefinitionError(ValueError):
    """A reducer was declared in a way lo_stream cannot run."""


class DuplicateReducerError(ReducerDefinitionError):
    """Two reducers claim the same id."""


def scope_key(values: Sequence[str]) -> str:
    """The table key for one scope: the value itself for one field, a JSON list for several.

    >>> scope_key(["s1"]), scope_key(["s1", "doc-9"])
    ('s1', '["s1","doc-9"]')
    """
    return values[0] if len(values) == 1 else orjson.dumps(list(values)).decode()


def _scope_value(envelope: dict, path: tuple[str, ...] | None) -> str | None:
    """A scope field's value as text: the student's (`path` None) or the one at `path` in ``client``."""
    if path is None:
        value = student_of(envelope)
    else:
        value = envelope.get("client")
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
    if value is None or isinstance(value, (dict, list)):
        return None
    return value if type(value) is str else str(value)


def _same_json(decoded: Any, value: Any) -> bool:
    """`decoded` is `value`, types too (a tuple comes back a list; 1.0 must not become 1).

    >>> _same_json([1, {"a": None}], [1, {"a": None}]), _same_json([1], (1,)), _same_json(1, 1.0)
    (True, False, False)
    """
    if type(decoded) is not type(value):
        return False
    if isinstance(value, dict):
        return decoded.keys() == value.keys() and all(_same_json(decoded[k], value[k]) for k in value)
    if isinstance(value, list):
        return len(decoded) == len(value) and all(_same_json(d, v) for d, v in zip(decoded, value))
    return decoded == value


@dataclass(frozen=True)
class Reducer:
    """One registered reducer. Responsibilities:

    1. say whether it wants an event (its sources and event types; empty means all);
    2. give the key its state lives under for an event (its scope), or None if the event
       lacks a scope field;
    3. turn (event, state) into the next state, starting from a fresh copy of `null_state`.
    """

    id: str
    function: ReducerFunction = field(repr=False, compare=False)
    null_state: Any = None
    scope: tuple[str, ...] = (STUDENT,)
    sources: frozenset[str] = frozenset()
    event_types: frozenset[str] = frozenset()
    version: int = 1

    @property
    def table_name(self) -> str:
        """Name of its table (and so of its changelog topic); a new version gets a new table."""
        return f"{self.id}-v{self.version}"

    @property
    def needs_repartition(self) -> bool:
        """Events are keyed by student; a scope without the student must be regrouped."""
        return STUDENT not in self.scope

    @cached_property
    def wants_all(self) -> bool:
        """No sources and no event types named: every event is for this reducer."""
        return not self.sources and not self.event_types

    def wants(self, envelope: dict) -> bool:
        if self.wants_all:
            return True
        client = envelope.get("client", {})
        return self.wants_kind(client.get("source"), client.get("event"))

    def wants_kind(self, source: str | None, event: str | None) -> bool:
        """Whether it wants events of this source and type (None: the field is missing)."""
        return (not self.sources or source in self.sources) and (not self.event_types or event in self.event_types)

    @cached_property
    def per_student(self) -> bool:
        """Its scope is the student alone (the key of the events topic's messages)."""
        return self.scope == (STUDENT,)

    @cached_property
    def _paths(self) -> tuple[tuple[str, ...] | None, ...]:
        """Where each scope field is: None for the student, else its path in ``client``."""
        return tuple(None if name == STUDENT else tuple(name.split(".")) for name in self.scope)

    def key(self, envelope: dict) -> str | None:
        if self.per_student:
            student = student_of(envelope)
            return student if type(student) is str else _scope_value(envelope, None)
        values = []
        for path in self._paths:
            value = _scope_value(envelope, path)
            if value is None:  # the event lacks a field of the scope
                return None
            values.append(value)
        return scope_key(values)

    def initial_state(self) -> Any:
        """A fresh copy of `null_state` (decoded from its JSON when that gives it back exactly:
        several times cheaper than a deep copy, and paid by every new key)."""
        if self._null_json is not None:
            return orjson.loads(self._null_json)
        return copy.deepcopy(self.null_state)

    @cached_property
    def _null_json(self) -> bytes | None:
        encoded = orjson.dumps(self.null_state)
        return encoded if _same_json(orjson.loads(encoded), self.null_state) else None

    async def apply(self, envelope: dict, state: Any) -> Any:
        """The next state: run the function; accept Learning Observer's ``(internal, external)``
        pair (internal is kept) and `UNCHANGED` (the state is kept)."""
        result = self.function(envelope, state)
        result = result if type(result) in PLAIN_STATES else await self.settle(result)
        return state if result is UNCHANGED else result

    @staticmethod
    async def settle(result: Any) -> Any:
        """The next state from what the function returned: awaited if an async function's, the
        internal half of a Learning Observer ``(internal, external)`` pair, and `UNCHANGED` where
        that half is ``False`` (LO's "do not write")."""
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, tuple) and len(result) == 2:
            result = UNCHANGED if result[0] is False else result[0]
        return result


class ReducerRegistry:
    """Every reducer known to this process, by id, in registration order."""

    def __init__(self) -> None:
        self._reducers: dict[str, Reducer] = {}

    def add(self, reducer: Reducer) -> None:
        existing = self._reducers.get(reducer.id)
        if existing is not None and existing.function is not reducer.function:
            raise DuplicateReducerError(
                f"two reducers are named {reducer.id!r} ({_where(existing.function)} and "
                f"{_where(reducer.function)}): reducer ids are <module>.<function>, rename one of them"
            )
        self._reducers[reducer.id] = reducer

    def get(self, reducer_id: str) -> Reducer:
        try:
            return self._reducers[reducer_id]
        except KeyError:
            known = ", ".join(self._reducers) or "none"
            raise KeyError(f"no reducer {reducer_id!r} (known: {known})") from None

    def __iter__(self) -> Iterator[Reducer]:
        return iter(list(self._reducers.values()))

    def __len__(self) -> int:
        return len(self._reducers)

    def from_module(self, module_name: str) -> list[Reducer]:
        """The reducers defined in a Python module or package."""
        return [r for r in self if r.id.startswith(module_name + ".")]


registry = ReducerRegistry()


def _where(function: Callable) -> str:
    code = getattr(function, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code else repr(function)


def _names(value: str | Iterable[str] | None, what: str, reducer_id: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    names = frozenset([value] if isinstance(value, str) else value)
    if not all(isinstance(name, str) and name for name in names):
        raise ReducerDefinitionError(f"reducer {reducer_id}: {what} must be strings, got {value!r}")
    return names


def event_reducer(
    *,
    scope: Sequence[str] = (STUDENT,),
    null_state: Any = None,
    sources: str | Iterable[str] | None = None,
    events: str | Iterable[str] | None = None,
    version: int = 1,
    registry: ReducerRegistry = registry,
) -> Callable[[ReducerFunction], ReducerFunction]:
    """Register a reducer whose state is keyed by `scope`.

    `scope` lists what the state is kept per: ``"student"`` and/or fields of the event as sent
    (``client.<field>``, dotted paths allowed). An event missing a scope field is not given to
    the reducer.

    >>> @event_reducer(scope=("student", "doc_id"), null_state={"saves": 0}, events="google_docs_save")
    ... def saves_per_document(event, state):
    ...     return {"saves": state["saves"] + 1}
    """

    def register(function: ReducerFunction) -> ReducerFunction:
        reducer_id = f"{function.__module__}.{function.__qualname__}"
        if not callable(function) or "<locals>" in reducer_id:
            raise ReducerDefinitionError(
                f"reducer {reducer_id}: decorate a module-level function, so that its id is stable"
            )
        if len(inspect.signature(function).parameters) != 2:
            raise ReducerDefinitionError(f"reducer {reducer_id}: the function must take (event, state)")
        if not scope or not all(isinstance(name, str) and name for name in scope):
            raise ReducerDefinitionError(f"reducer {reducer_id}: scope must be a non-empty list of field names")
        if not isinstance(version, int) or version < 1:
            raise ReducerDefinitionError(f"reducer {reducer_id}: version must be a positive integer, got {version!r}")
        try:
            orjson.dumps(null_state)
        except TypeError as exc:
            raise ReducerDefinitionError(f"reducer {reducer_id}: null_state must be JSON-serialisable ({exc})") from None
        registry.add(
            Reducer(
                id=reducer_id,
                function=function,
                null_state=copy.deepcopy(null_state),
                scope=tuple(scope),
                sources=_names(sources, "sources", reducer_id),
                event_types=_names(events, "events", reducer_id),
                version=version,
            )
        )
        return function

    return register


def student_event_reducer(
    *,
    null_state: Any = None,
    sources: str | Iterable[str] | None = None,
    events: str | Iterable[str] | None = None,
    version: int = 1,
    registry: ReducerRegistry = registry,
) -> Callable[[ReducerFunction], ReducerFunction]:
    """Register a reducer whose state is kept per student.

    >>> @student_event_reducer(null_state={"count": 0})
    ... async def student_event_counter(event, state):
    ...     return {"count": state["count"] + 1}
    """
    return event_reducer(
        scope=(STUDENT,), null_state=null_state, sources=sources, events=events, version=version, registry=registry
    )
