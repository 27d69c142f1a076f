"""The roster table: every course's roster and its name and teachers, kept from their topics.

Rosters are small (a school's courses fit in a few megabytes) and every query joins with them,
so each process that needs them keeps all of them in memory, Kafka Streams' "global table": it
reads the compacted rosters and courses topics from the start, is ready once it reached their
end, and then follows them, so a reloaded roster shows up within a moment. The topics are
written by `lo_stream.connectors.rosters` (one record per course).

    async with RosterTable(settings) as rosters:
        rosters.students("alg-1")       # [{"user_id", "safe_user_id", "given_name", ...}, ...]
        rosters.courses_taught_by("ms.rivera")
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import orjson
from aiokafka import AIOKafkaConsumer

from lo_stream.settings import Settings

__all__ = ["RosterTable"]

logger = logging.getLogger(__name__)


class RosterTable:
    """Rosters and courses by course id. Responsibilities:

    1. read both compacted topics to their end before it says it is ready;
    2. keep following them, replacing a course's roster (or record) with each new one;
    3. tell listeners which course changed.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rosters: dict[str, dict] = {}
        self.courses: dict[str, dict] = {}
        self.listeners: list[Callable[[str], None]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._follower: asyncio.Task | None = None

    async def __aenter__(self) -> "RosterTable":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Read both topics to their end (the topics must exist: `lo_stream.topics.ensure_topics`)."""
        topics = self.settings.topics
        self._consumer = AIOKafkaConsumer(
            topics.rosters, topics.courses,
            bootstrap_servers=self.settings.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await self._consumer.start()
        partitions = sorted(self._consumer.assignment())
        end = await self._consumer.end_offsets(partitions) if partitions else {}
        while [tp for tp in partitions if await self._consumer.position(tp) < end[tp]]:
            self._apply(await self._consumer.getmany(timeout_ms=1000))
        self._follower = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def _follow(self) -> None:
        while True:
            self._apply(await self._consumer.getmany(timeout_ms=1000))

    def _apply(self, batches: dict) -> None:
        for records in batches.values():
            for record in records:
                course_id = record.key.decode()
                target = self.rosters if record.topic == self.settings.topics.rosters else self.courses
                if record.value is None:
                    target.pop(course_id, None)
                else:
                    target[course_id] = orjson.loads(record.value)
                for listener in self.listeners:
                    try:
                        listener(course_id)
                    except Exception:  # one listener's bug must not stop the roster updates
                        logger.exception("roster listener failed for course %s", course_id)

    def students(self, course_id: str) -> list[dict] | None:
        """The students of a course, or None when it has no roster."""
        roster = self.rosters.get(course_id)
        return roster["students"] if roster else None

    def course_ids(self) -> list[str]:
        return sorted(set(self.rosters) | set(self.courses))

    def courses_taught_by(self, teacher: str) -> list[str]:
        return sorted(c for c, course in self.courses.items() if teacher in course.get("teachers", []))
