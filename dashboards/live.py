"""Live course data shared by every browser session of the dashboard server.

Responsibilities:

1. one live subscription per course that someone is looking at, however many tabs show it;
2. keep the course's rows (one per roster student) and tell watchers which students changed;
3. say when the query layer is unreachable, keep retrying, and recover by itself;
4. end the subscription shortly after the last viewer leaves.

Sessions register a plain callback (`LiveCourse.watch`) and must call the returned `unwatch`
when they end: nothing here holds on to a session after that (see `dashboards.pages`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from lo_stream.query.client import BackendError, QueryClient

__all__ = ["LiveCourse", "LiveCourses", "OVERVIEW_EXPORT"]

logger = logging.getLogger(__name__)

OVERVIEW_EXPORT = "writing.course_overview"
RETRY_SECONDS = (0.5, 1, 2, 4, 5)
IDLE_GRACE_SECONDS = 10.0

# Called with the students whose rows changed, or None when every row may have.
Watcher = Callable[[set[str] | None], None]


class LiveCourse:
    """The live rows of one course."""

    def __init__(self, course_id: str) -> None:
        self.course_id = course_id
        self.rows: dict[str, dict] = {}
        self.loaded = False
        self.problem: str | None = "connecting to the query layer ..."
        self.watchers: list[Watcher] = []

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        self.watchers.append(watcher)
        return lambda: self.watchers.remove(watcher) if watcher in self.watchers else None

    def _notify(self, students: set[str] | None) -> None:
        for watcher in list(self.watchers):
            try:
                watcher(students)
            except Exception:  # a broken session must not stop the others' updates
                logger.exception("a dashboard session failed to take an update")

    def _apply(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "result":
            self.rows = {row["key"]["student"]: row for row in message["result"]}
            self.loaded, self.problem = True, None
            self._notify(None)
        elif kind == "update":
            changed = {row["key"]["student"]: row for row in message["rows"]}
            self.rows.update(changed)
            self._notify(set(changed))
        elif kind == "error":
            self.problem = message.get("error") or "the query failed"
            self._notify(None)


class LiveCourses:
    """The live courses of the dashboard server, each followed while someone looks at it."""

    def __init__(self, client: QueryClient) -> None:
        self.client = client
        self.courses: dict[str, LiveCourse] = {}
        self._viewers: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    def acquire(self, course_id: str) -> LiveCourse:
        course = self.courses.get(course_id)
        if course is None:
            course = self.courses[course_id] = LiveCourse(course_id)
        self._viewers[course_id] = self._viewers.get(course_id, 0) + 1
        task = self._tasks.get(course_id)
        if task is None or task.done():
            self._tasks[course_id] = asyncio.get_running_loop().create_task(self._follow(course))
        return course

    def release(self, course_id: str) -> None:
        self._viewers[course_id] = max(self._viewers.get(course_id, 0) - 1, 0)
        if not self._viewers[course_id]:
            asyncio.get_running_loop().call_later(IDLE_GRACE_SECONDS, self._drop_if_unwatched, course_id)

    def status(self) -> dict:
        return {
            course_id: {"viewers": self._viewers.get(course_id, 0), "watchers": len(course.watchers)}
            for course_id, course in self.courses.items()
        }

    def _drop_if_unwatched(self, course_id: str) -> None:
        if self._viewers.get(course_id) == 0:
            task = self._tasks.pop(course_id, None)
            if task is not None:
                task.cancel()
            self.courses.pop(course_id, None)
            self._viewers.pop(course_id, None)

    async def _follow(self, course: LiveCourse) -> None:
        attempt = 0
        while True:
            try:
                async for message in self.client.live(OVERVIEW_EXPORT, {"course_id": course.course_id}):
                    course._apply(message)
                    if message.get("type") == "error":
                        break  # e.g. no roster yet: ask again later
                    attempt = 0
            except BackendError as exc:
                course.problem = f"{exc}; retrying"
                course._notify(None)
            delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
            attempt += 1
            await asyncio.sleep(delay)
