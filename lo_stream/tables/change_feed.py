"""The change feed: every change of every reducer table, for any process that wants to follow it.

Mechanism: the tables' changelog topics themselves. Faust already writes each table change
there (that is how tables survive restarts), so following them costs no extra write on the hot
path, can never disagree with the tables, and — being compacted — lets a new subscriber read
the current value of every key first and then the live changes. A dedicated "changes" topic
would double every write for the same information.

    async with ChangeFeed(settings, registry) as feed:
        async for change in feed:
            print(change.reducer_id, change.key, change.state, change.offset)
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
        self._consumer = AIOKafkaConsumer(
            *self._reducers,
            bootstrap_servers=settings.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            # Under exactly-once, changes of aborted transactions must never be seen.
            isolation_level="read_committed",
            # A table's changelog appears when its worker first starts: notice it soon.
            metadata_max_age_ms=1000,
        )

    async def __aenter__(self) -> "ChangeFeed":
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._consumer.stop()

    async def __aiter__(self) -> AsyncIterator[Change]:
        async for record in self._consumer:
            if record.value is None:  # a tombstone: nothing to tell
                continue
            reducer = self._reducers[record.topic]
            value = orjson.loads(record.value)
            yield Change(
                reducer_id=reducer.id,
                version=reducer.version,
                key=orjson.loads(record.key),
                state=value["state"],
                offset=value["offset"],
                partition=value["partition"],
            )
