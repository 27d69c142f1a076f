"""Commit an event's offset only once the table writes it caused are stored in Kafka.

Faust sends a table's changelog records through a buffer that a background task drains
(``ProducerBuffer``), and flushes it before committing offsets. In faust-streaming 0.15.3 that
flush is not a barrier: it returns after 0.1 s without progress, and it does not count the
record being handed to Kafka at that moment. So a commit can cover events whose table writes are
still queued; a rebalance then rebuilds the table from a changelog without them (Faust restores
active partitions from the changelog on every rebalance) and the events are never read again.
Under exactly-once the commit does not flush the buffer at all, so queued writes fall into the
next transaction while the offsets are committed in this one.

`track_deliveries` makes both commit paths wait until every record the app has queued is
acknowledged, and fail (so that nothing is committed and the events are read again) when one
was refused or does not arrive in time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import ProducerT

__all__ = ["DeliveryError", "track_deliveries"]

#: How long a commit waits for the queued records before failing (Kafka's own request timeout
#: and retries give up well before this).
DELIVERY_TIMEOUT_S = 120.0


class DeliveryError(RuntimeError):
    """Records queued by the worker did not reach Kafka: the offsets covering them are not committed."""


def track_deliveries(producer: ProducerT, timeout: float = DELIVERY_TIMEOUT_S) -> ProducerT:
    """Make `producer`'s flush and transaction commit wait for the records queued (``send_soon``) before them."""
    pending: set[asyncio.Future] = set()
    failures: list[BaseException] = []

    def settled(future: asyncio.Future) -> None:
        pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            failures.append(future.exception())

    queue = producer.buffer.put

    def put(future: asyncio.Future) -> None:
        pending.add(future)
        future.add_done_callback(settled)
        queue(future)

    async def delivered() -> None:
        # The records queued so far: the offsets being committed were chosen before this call, so
        # their events' writes are among them. Records queued meanwhile belong to a later commit
        # (waiting for them too would never end while events keep coming).
        queued = list(pending)
        if queued:
            _, late = await asyncio.wait(queued, timeout=timeout)
            if late:
                raise DeliveryError(f"{len(late)} queued records were not acknowledged by Kafka within {timeout:g}s")
        if failures:  # for good: a later commit would cover the lost record too
            raise DeliveryError(
                f"Kafka refused a record the worker wrote ({failures[0]!r}); restart the worker to process "
                "the uncommitted events again"
            ) from failures[0]

    flush = producer.flush

    async def flush_delivered() -> None:
        await delivered()
        await flush()

    commit_transactions = producer.commit_transactions

    async def commit_delivered(*args: Any, **kwargs: Any) -> None:
        await delivered()
        await commit_transactions(*args, **kwargs)

    producer.buffer.put = put
    producer.flush = flush_delivered
    producer.commit_transactions = commit_delivered
    return producer
