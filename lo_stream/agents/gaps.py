"""Fetch the messages Faust skipped, so that every event reaches the reducers, in order.

faust-streaming 0.15.3 can skip messages of a source partition. Seen under exactly-once (the
only mode the agents use this guard in, `lo_stream.agents`), right
after a worker restored its tables: the recovery resumes the stream partitions *before* seeking
them to their committed offsets. Messages fetched meanwhile reach the agent, the seek resets
Faust's read offset, and Faust then takes the jump to the rest of the fetched batch for a gap
(as transaction markers leave) and counts the offsets in between as done. A few of those
messages never reached the agent. Their offsets were committed, so they were never read again,
and the tables missed those events (3 to 16 per partition in our restart test).

The skipped messages were never acknowledged either, so Faust's committed offset also stopped
at the first of them for the rest of the worker's life: every restart read the partition again
from there.

`GapGuard` remembers, per source partition, the offset after the last message the agent saw in
the current consumer generation (a rebalance starts the partition again from its committed
offset, possibly after another worker moved it on). When a message comes later than that, it reads the offsets in between straight from Kafka (with
the worker's isolation level). The agent applies them first, under the current event, so their
table writes are committed with its offset; then `settled` tells Faust's consumer that the range
is done, so that its commits move on. Offsets that hold no message (transaction markers,
compacted records) come back empty; messages the agent did see are skipped again by the
`applied` marks of the tables (`lo_stream.tables.entries`).
"""

from __future__ import annotations

import logging
import time
import faust
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faust.types import TP, Message

from lo_stream.settings import Settings

__all__ = ["GapError", "GapGuard"]

logger = logging.getLogger(__name__)

#: How long one poll for the skipped offsets waits (short: a range holding only a transaction
#: marker yields no record, and the poll would wait it out), and how long they may take in all.
FETCH_TIMEOUT_MS = 100
FETCH_DEADLINE_S = 60.0


class GapError(RuntimeError):
    """Messages Faust skipped could not be read back."""


class GapGuard:
    """Per source partition, the offsets between the messages the agent saw; fetched when skipped."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self._app = app
        self._settings = settings
        self._next: dict[TP, tuple[int, int]] = {}  # (consumer generation, offset expected next)
        self._unsettled: dict[TP, tuple[int, int]] = {}
        self._consumer: AIOKafkaConsumer | None = None

    async def skipped(self, message: Message) -> list[ConsumerRecord]:
        """The records between the last message seen on `message`'s partition and `message`, oldest first."""
        tp = message.tp
        generation, expected = self._next.get(tp, (None, None))
        self._next[tp] = (message.generation_id, message.offset + 1)
        self._unsettled.pop(tp, None)
        if generation != message.generation_id or message.offset <= expected:
            return []  # the first message after an assignment, the next one, or a re-delivery
        records = await self._fetch(tp, expected, message.offset)
        self._unsettled[tp] = (expected, message.offset)
        if records:
            logger.warning(
                "Faust skipped %d message(s) of %s[%d] between offsets %d and %d; applying them now",
                len(records), tp.topic, tp.partition, expected, message.offset,
            )
        return records

    async def settled(self, message: Message) -> None:
        """The records `skipped` returned for `message` are applied: let Faust commit past them."""
        span = self._unsettled.pop(message.tp, None)
        if span is not None:
            # Faust counts the offsets of a gap as acknowledged (its own use: transaction markers).
            await self._app.consumer._add_gap(message.tp, span[0], span[1] - 1)

    async def _fetch(self, tp: TP, start: int, end: int) -> list[ConsumerRecord]:
        consumer = await self._started()
        partition = TopicPartition(tp.topic, tp.partition)
        consumer.assign([partition])
        consumer.seek(partition, start)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + FETCH_DEADLINE_S
        while await consumer.position(partition) < end:
            if time.monotonic() > deadline:
                raise GapError(
                    f"could not read offsets {start}..{end - 1} of {tp.topic}[{tp.partition}], which Faust skipped, "
                    f"within {FETCH_DEADLINE_S:g}s; check the broker, then restart the worker (those events are "
                    "not committed)"
                )
            batch = await consumer.getmany(partition, timeout_ms=FETCH_TIMEOUT_MS)
            records.extend(record for record in batch.get(partition, []) if record.offset < end)
        return records

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            exactly_once = self._settings.processing_guarantee == "exactly_once"
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._settings.bootstrap_servers,
                enable_auto_commit=False,
                # Faust's own consumer reads committed records only under exactly-once.
                isolation_level="read_committed" if exactly_once else "read_uncommitted",
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
