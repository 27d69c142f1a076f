"""Published functions: the only code a query's ``call`` and ``map`` nodes can run.

    from lo_stream.query import published

    @published("mymodule.minutes")
    def minutes(milliseconds):
        return round(milliseconds / 60000, 1)

A function published with ``context=True`` gets the query's `QueryContext` first (who asks, the
rosters); one with ``student_rows=True`` returns a list of roster students, which lets a live
subscription re-run the query for just the students whose tables changed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from lo_stream.query.language import QueryError

__all__ = ["FunctionRegistry", "Published", "QueryContext", "functions", "published"]


class QueryContext(Protocol):
    """What a context-taking function can use (see `lo_stream.query.executor`)."""

    def roster(self, course_id: str) -> list[dict]: ...


@dataclass(frozen=True)
class Published:
    name: str
    function: Callable[..., Any]
    context: bool
    student_rows: bool

    async def __call__(self, context: QueryContext, *args: Any, **kwargs: Any) -> Any:
        result = self.function(context, *args, **kwargs) if self.context else self.function(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result


class FunctionRegistry:
    """Published functions by name."""

    def __init__(self) -> None:
        self._functions: dict[str, Published] = {}

    def publish(self, name: str | None = None, *, context: bool = False, student_rows: bool = False):
        def register(function: Callable[..., Any]) -> Callable[..., Any]:
            full_name = name or f"{function.__module__}.{function.__qualname__}"
            existing = self._functions.get(full_name)
            if existing is not None and existing.function is not function:
                raise QueryError(f"a function named {full_name!r} is already published")
            self._functions[full_name] = Published(full_name, function, context, student_rows)
            return function

        return register

    def __getitem__(self, name: str) -> Published:
        return self._functions[name]

    def names(self) -> set[str]:
        return set(self._functions)


functions = FunctionRegistry()
published = functions.publish


@published("lo_stream.roster", context=True, student_rows=True)
def roster(context: QueryContext, course_id: str) -> list[dict]:
    """The students of a course (user_id, safe_user_id, names, email, photo_url)."""
    return context.roster(course_id)


@published("lo_stream.initials")
def initials(full_name: str) -> str:
    """ "Ana Lima" -> "AL"."""
    return "".join(part[0] for part in str(full_name).split()[:2]).upper()
