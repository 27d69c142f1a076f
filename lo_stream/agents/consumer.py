"""Faust's Kafka consumer, with two faust-streaming 0.15.3 defects worked around.

1. **Records handed out for paused partitions, then dropped.** Faust asks aiokafka, in the
   consumer's thread, for the records of its *active* partitions, passing the very set it pauses
   and resumes partitions in meanwhile; aiokafka reads an empty set as "every partition". Then
   it drops, as not active, the records of any partition not in that set any more. aiokafka's
   position has moved past them by then, so nothing reads them again: the worker never processed
   those events nor committed past them. Seen after restoring tables, when Faust paused its last
   active (changelog) partitions while aiokafka waited, before resuming the source partitions: a
   replay waited for ever in 3 of 3 full test runs (2026-11-25), and probes in Faust showed the
   source records dropped as "not active". `ExactConsumer` asks aiokafka for a copy of the set
   taken when the fetch starts (nothing at all when it is empty), and seeks back to the records
   of a partition paused before they are handed over, so they are fetched again once it is
   resumed.
2. **Highwaters read as -1 under exactly-once.** Before restoring a table, Faust reads each
   changelog partition's highwater (its last offset). Under exactly-once it takes it from the last
   fetch response of its consumer (aiokafka's ``last_stable_offset``), unknown for a partition
   not fetched yet, as at every start, and read as -1. Recovery then crashed with a
   ``ConsistencyError`` (a local table's stored offset "above the highwater", seen on restarts and
   when a second worker joined), or believed there was nothing to restore. `ExactConsumer` asks
   the broker instead (ListOffsets, with the consumer's ``read_committed`` isolation: the last
   stable offset), as Faust already does under at-least-once.
"""

from __future__ import annotations

from typing import Mapping, Optional, Set, Tuple

import aiokafka
from faust.transport.consumer import RecordMap
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP

__all__ = ["ExactConsumer"]


class _ConsumerThread(AIOKafkaConsumerThread):
    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        return await self._ensure_consumer().end_offsets(partitions)

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: Set[TP],
        timeout: Optional[float] = None,
        max_records: Optional[int] = None,
    ) -> RecordMap:
        wanted = set(active_partitions)  # Faust changes `active_partitions` while aiokafka waits
        if not wanted:
            return {}
        return await super()._fetch_records(consumer, wanted, timeout=timeout, max_records=max_records)


class ExactConsumer(Consumer):
    """Faust's aiokafka consumer: no records handed out for partitions it paused, and changelog
    highwaters from the broker under exactly-once too."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> Tuple[Optional[RecordMap], Optional[Set[TP]]]:
        records, active = await super()._wait_next_records(timeout)
        if records and active is not None:
            paused = [tp for tp, fetched in records.items()
                      if fetched and tp not in active and tp not in self._buffered_partitions]
            if paused:
                records = dict(records)
                for tp in paused:  # Faust would drop them: fetch them again once resumed
                    await self.seek(tp, records.pop(tp)[0].offset)
        return records, active
