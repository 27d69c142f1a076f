"""The change feed: every change of every reducer table, for any process that wants to follow it.

Mechanism: the tables' changelog topics themselves. The engine already writes each table change
there (that is how tables survive restarts), so following them costs no extra write on the hot
path, can never disagree with the tables, and — being compacted — lets a new subscriber read
the current value of every key first and then the live changes. A dedicated "changes" topic
would double every write for the same information.

    async with ChangeFeed(settings, registry) as feed:
        async for change in feed:
            print(change.reducer_id, change.key, change.state, change.offset)

``from_beginning=False`` starts at the end of the changelogs that exist when the feed starts (a
changelog that appears later, when a reducer first writes, is read from its start), and the feed
is ready once those end positions are fixed: a change made after ``__aenter__`` returns is seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable

import orjson
from aiokafka import AIOKafkaConsumer

from lo_stream.reducers import Reducer
from lo_stream.settings import Settings
from lo_stream.tables import changelog_topic

__all__ = ["Change", "ChangeFeed"]


@dataclass(frozen=True)
class Change:
    """One table write: a reducer's new state for a key, and where on the events topic the event
    that caused it is (partition and offset)."""

    reducer_id: str
    version: int
    key: str
    state: Any
    offset: int
    partition: int


class ChangeFeed:
    """Follow the changelog topics of `reducers`. Responsibilities:

    1. map each reducer version to its changelog topic;
    2. read from the start (every key's current value, then live changes) or only new changes;
    3. decode each record into a `Change`.
    """

    def __init__(self, settings: Settings, reducers: Iterable[Reducer], *, from_beginning: bool = True) -> None:
        self._reducers = {changelog_topic(settings, reducer): reducer for reducer in reducers}
        self._from_beginning = from_beginning
        self._consumer = AIOKafkaConsumer(
            *self._reducers,
            bootstrap_servers=settings.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Under exactly-once, changes of aborted transactions must never be seen.
            isolation_level="read_committed",
            # A table's changelog appears when its worker first starts: notice it soon.
            metadata_max_age_ms=1000,
        )

    async def __aenter__(self) -> "ChangeFeed":
        await self._consumer.start()
        if not self._from_beginning:
            partitions = list(self._consumer.assignment())
            if partitions:
                await self._consumer.seek_to_end(*partitions)
                for partition in partitions:
                    await self._consumer.position(partition)  # fixes the position now
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._consumer.stop()

    async def __aiter__(self) -> AsyncIterator[Change]:
        async for batch in self.batches():
            for change in batch:
                yield change

    async def batches(self, timeout_ms: int = 200) -> AsyncIterator[list[Change]]:
        """The changes as they arrive, a list per fetch (never empty)."""
        while True:
            fetched = await self._consumer.getmany(timeout_ms=timeout_ms)
            batch = [self._decode(record) for records in fetched.values() for record in records if record.value is not None]
            if batch:
                yield batch

    def _decode(self, record: Any) -> Change:
        reducer = self._reducers[record.topic]
        value = orjson.loads(record.value)
        return Change(
            reducer_id=reducer.id,
            version=reducer.version,
            key=orjson.loads(record.key),
            state=value["state"],
            offset=value["offset"],
            partition=value["partition"],
        )
