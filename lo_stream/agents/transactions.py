"""Exactly-once: put every record an event causes in the transaction that commits the event's offset.

Under ``processing_guarantee="exactly_once"`` Faust keeps one Kafka transaction per source
partition (transactional id ``<app id>-<topic group>-<partition>``) and commits each source
partition's offsets in its own transaction. faust-streaming 0.15.3 picks the transaction of a
record by its *destination* partition, though. A record an agent sends to another topic (an
event forwarded to a repartition topic, a dead letter) then lands in the transaction of whatever
partition it is sent to: the event's offset can be committed while that record's transaction is
still open, and a stop aborts it. The event is never read again, and its effect is lost.

`SourceTransactions` sends a record made while an event is processed in that event's
transaction. Records sent outside an event (a table's changelog, drained by Faust's producer
buffer in a task of its own) keep Faust's routing: a table writes its changelog to the partition
of the event being processed, and all of a worker's topics with that partition count form one
topic group, so the destination's transaction is the source's.

It also skips Faust's last commit at shutdown when that finds a transaction already ended
(see `SourceTransactions.commit`).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Mapping, Optional

from aiokafka.errors import IllegalOperation
from faust import current_event
from faust.transport.consumer import TransactionManager
from faust.types import TP

__all__ = ["SourceTransactions"]

logger = logging.getLogger(__name__)


class SourceTransactions(TransactionManager):
    """Faust's transaction manager, routing the records an event causes to that event's transaction."""

    def transactional_id(self, tp: TP) -> str:
        """The transaction committing source partition `tp`'s offsets (Faust's naming, as in ``commit``)."""
        return f"{self.app.conf.id}-{self.app.assignor.group_for_topic(tp.topic)}-{tp.partition}"

    async def commit(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        """Faust's commit. At shutdown a commit (the last one, or a periodic one racing it) may find
        a transaction already ended ("Not in the middle of a transaction"), which crashed the
        stopping worker. Skipping it is safe: the open transactions are aborted when the next
        worker starts, and their events read again."""
        try:
            return await super().commit(offsets, start_new_transaction=start_new_transaction)
        except IllegalOperation as exc:
            if start_new_transaction and not self.app.should_stop:
                raise
            logger.warning("commit at shutdown skipped (%s); the next worker processes those events again", exc)
            return False

    async def send(
        self,
        topic: str,
        key: Optional[bytes],
        value: Optional[bytes],
        partition: Optional[int],
        timestamp: Optional[float],
        headers: Any,
        *,
        transactional_id: Optional[str] = None,
    ) -> Awaitable[Any]:
        event = current_event()
        if event is None:
            return await super().send(topic, key, value, partition, timestamp, headers)
        return await self.producer.send(
            topic,
            key,
            value,
            self.consumer.key_partition(topic, key, partition),
            timestamp,
            headers,
            transactional_id=self.transactional_id(event.message.tp),
        )
