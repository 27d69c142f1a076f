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

It also keeps a worker's transactional producers in step with its assignment. On a rebalance
Faust stops the producers of revoked partitions, except those its assignor lists as standbys, and
that list holds a standby's whole topic group, the source partition too. So when a second worker
took a source partition and this one kept its changelogs as standbys, the producer was kept; the
other worker's producer fenced it; when the partition came back (the other worker stopped), the
next changelog record sent through it crashed the worker ("Can't send messages while not in
transaction"). `SourceTransactions.on_rebalance` stops every producer whose partition is not
actively assigned now, and starts the missing ones.

And it skips Faust's last commit at shutdown when that finds a transaction already ended
(see `SourceTransactions.commit`).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Mapping, Optional, Set

from aiokafka.errors import IllegalOperation
from faust import current_event
from faust.transport.consumer import TopicPartitionGroup, TransactionManager
from faust.types import TP

__all__ = ["SourceTransactions"]

logger = logging.getLogger(__name__)


class SourceTransactions(TransactionManager):
    """Faust's transaction manager, routing the records an event causes to that event's transaction."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._running: set[str] = set()  # the transactional ids this worker has producers for

    def transactional_id(self, tp: TP) -> str:
        """The transaction committing source partition `tp`'s offsets, named by Faust's format."""
        group = self.app.assignor.group_for_topic(tp.topic)
        return self.transactional_id_format.format(
            group_id=self.app.conf.id, tpg=TopicPartitionGroup(tp.topic, tp.partition, group)
        )

    async def on_rebalance(self, assigned: Set[TP], revoked: Set[TP], newly_assigned: Set[TP]) -> None:
        """Hold a producer for exactly the partitions actively assigned now: stop the others (another
        worker's producer fences them, and its recovery aborts their open transactions), start the
        missing ones."""
        wanted = self._tps_to_transactional_ids(assigned)
        stale, missing = sorted(self._running - wanted), sorted(wanted - self._running)
        if stale:
            self.log.info("stopping %d transactional producer(s) of partitions no longer assigned: %s", len(stale), stale)
            await self._stop_transactions(stale)
        if missing:
            self.log.info("starting %d transactional producer(s): %s", len(missing), missing)
            await self._start_transactions(missing)
        self._running = wanted

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
