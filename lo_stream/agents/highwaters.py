"""Exactly-once: restore each table up to where its changelog really ends.

Before restoring a table, Faust reads each changelog partition's highwater (its last offset).
Under exactly-once, faust-streaming 0.15.3 takes it from the last fetch response of its consumer
(aiokafka's ``last_stable_offset``). That is unknown for a partition the consumer has not fetched
yet, as at every start, and Faust reads it as -1. So recovery either crashed with a
``ConsistencyError`` (a local table's stored offset "above the highwater", seen on restarts and
when a second worker joined), or believed there was nothing to restore.

`StableHighwaterConsumer` asks the broker instead (ListOffsets, with the consumer's
``read_committed`` isolation: the last stable offset), as Faust already does under at-least-once.
"""

from __future__ import annotations

from typing import Mapping

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP

__all__ = ["StableHighwaterConsumer"]


class _ConsumerThread(AIOKafkaConsumerThread):
    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        return await self._ensure_consumer().end_offsets(partitions)


class StableHighwaterConsumer(Consumer):
    """Faust's aiokafka consumer, reading changelog highwaters from the broker under exactly-once too."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)
