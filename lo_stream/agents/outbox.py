"""The engine's outbox: every record a worker writes, and the barrier each commit waits at.

A worker writes changelog records, events forwarded to repartition topics and dead letters, each
on behalf of the source partition whose messages caused it. A commit covers the messages
processed since the last one; it waits until every record they caused is acknowledged by Kafka,
and fails (`DeliveryError`) when one was refused or did not arrive in time. Nothing is committed
past a lost write.

- At-least-once (`AtLeastOnceOutbox`): one idempotent producer (``acks=all``); the commit waits
  for the acknowledgements, then commits the consumer's offsets.
- Exactly-once (`ExactlyOnceOutbox`): one transactional producer per source partition
  (transactional id ``<group>-<partition>``), so that a partition's records and offsets commit
  together in its transaction. Starting the producer of a newly assigned partition fences the
  previous owner's (a zombie can write nothing more) and aborts its open transaction, before the
  partition's tables are restored.

Records go out in produce batches (``create_batch`` / ``send_batch``): one call per target
partition per batch of messages, not one per record.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from lo_stream.settings import Settings

__all__ = ["AtLeastOnceOutbox", "DeliveryError", "ExactlyOnceOutbox", "Outbox", "outbox_for"]

logger = logging.getLogger(__name__)

#: How long a commit waits for its records (Kafka's own request timeout gives up before this).
DELIVERY_TIMEOUT_S = 120.0
MAX_BATCH_BYTES = 1024 * 1024


class DeliveryError(RuntimeError):
    """Records the worker wrote did not reach Kafka: the offsets covering them are not committed."""


@dataclass
class _Sent:
    topic: str
    partition: int
    future: asyncio.Future
    count: int


def _producer(settings: Settings, **config: object) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.changelog_linger_ms,
        max_batch_size=MAX_BATCH_BYTES,
        max_request_size=MAX_BATCH_BYTES,
        **config,
    )


class Outbox:
    """What both guarantees share: sending records in batches and waiting for them at a commit."""

    def __init__(self, settings: Settings, group: str, consumer: AIOKafkaConsumer) -> None:
        self.settings = settings
        self.group = group
        self.consumer = consumer
        self._sent: list[_Sent] = []

    def producer(self, source: int) -> AIOKafkaProducer:
        raise NotImplementedError

    async def begin(self, source: int) -> None:
        """Before the first record of `source` since the last commit."""

    async def send(self, source: int, topic: str, partition: int, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        """Queue `records` for `topic[partition]`, on behalf of source partition `source`."""
        producer = self.producer(source)
        await self.begin(source)
        batch, count = producer.create_batch(), 0
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                await self._send_batch(producer, batch, topic, partition, count)
                batch, count = producer.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise DeliveryError(f"a record of {len(value or b'')} bytes for {topic} is larger than a produce "
                                        f"batch ({MAX_BATCH_BYTES} bytes)")
            count += 1
        if count:
            await self._send_batch(producer, batch, topic, partition, count)

    async def _send_batch(self, producer: AIOKafkaProducer, batch, topic: str, partition: int, count: int) -> None:
        future = await producer.send_batch(batch, topic, partition=partition)
        self._sent.append(_Sent(topic, partition, future, count))

    async def delivered(self) -> dict[tuple[str, int], int]:
        """Wait for every record sent since the last commit; return the last offset written per
        (topic, partition)."""
        sent, self._sent = self._sent, []
        if not sent:
            return {}
        try:
            results = await asyncio.wait_for(asyncio.gather(*(s.future for s in sent)), DELIVERY_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise DeliveryError(f"records the worker wrote were not acknowledged within {DELIVERY_TIMEOUT_S:g} s") from None
        except KafkaError as exc:
            raise DeliveryError(f"Kafka refused a record the worker wrote ({exc!r})") from exc
        last: dict[tuple[str, int], int] = {}
        for s, metadata in zip(sent, results):
            where = (s.topic, s.partition)
            last[where] = max(last.get(where, -1), metadata.offset + s.count - 1)
        return last

    async def commit(self, offsets: dict[TopicPartition, int]) -> dict[tuple[str, int], int]:
        """Make the records sent since the last commit and the consumer `offsets` durable, together."""
        raise NotImplementedError

    async def abort(self) -> None:
        """Give up what was sent since the last commit (a failed commit)."""
        self._sent = []

    async def assign(self, partitions: set[int]) -> None:
        """The source partitions this worker now processes (before their tables are restored)."""

    async def revoke(self, partitions: set[int]) -> None:
        """Source partitions this worker gave up (after their last commit)."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class AtLeastOnceOutbox(Outbox):
    """One idempotent producer; a commit waits for its acknowledgements, then commits the offsets."""

    def __init__(self, settings: Settings, group: str, consumer: AIOKafkaConsumer) -> None:
        super().__init__(settings, group, consumer)
        self._producer = _producer(settings)

    def producer(self, source: int) -> AIOKafkaProducer:
        return self._producer

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def commit(self, offsets: dict[TopicPartition, int]) -> dict[tuple[str, int], int]:
        written = await self.delivered()
        if offsets:
            await self.consumer.commit(offsets)
        return written


class ExactlyOnceOutbox(Outbox):
    """A transactional producer per source partition; a commit sends each partition's offsets into
    its transaction and commits it."""

    def __init__(self, settings: Settings, group: str, consumer: AIOKafkaConsumer) -> None:
        super().__init__(settings, group, consumer)
        self._producers: dict[int, AIOKafkaProducer] = {}
        self._open: set[int] = set()

    def transactional_id(self, source: int) -> str:
        return f"{self.group}-{source}"

    def producer(self, source: int) -> AIOKafkaProducer:
        return self._producers[source]

    async def begin(self, source: int) -> None:
        if source not in self._open:
            await self._producers[source].begin_transaction()
            self._open.add(source)

    async def assign(self, partitions: set[int]) -> None:
        for source in sorted(partitions - set(self._producers)):
            producer = _producer(self.settings, transactional_id=self.transactional_id(source))
            await producer.start()  # fences the previous owner's producer, aborts its open transaction
            self._producers[source] = producer

    async def revoke(self, partitions: set[int]) -> None:
        for source in sorted(partitions & set(self._producers)):
            self._open.discard(source)
            await self._producers.pop(source).stop()

    async def stop(self) -> None:
        await self.revoke(set(self._producers))

    async def commit(self, offsets: dict[TopicPartition, int]) -> dict[tuple[str, int], int]:
        written = await self.delivered()
        by_source: dict[int, dict[TopicPartition, int]] = {}
        for tp, offset in offsets.items():
            by_source.setdefault(tp.partition, {})[tp] = offset
        for source in sorted(set(by_source) | self._open):
            await self.begin(source)
            producer = self._producers[source]
            try:
                if by_source.get(source):
                    await producer.send_offsets_to_transaction(by_source[source], self.group)
                await producer.commit_transaction()
            except KafkaError as exc:
                raise DeliveryError(f"the transaction of partition {source} did not commit ({exc!r})") from exc
            finally:
                self._open.discard(source)
        return written

    async def abort(self) -> None:
        await super().abort()
        for source in sorted(self._open):
            try:
                await self._producers[source].abort_transaction()
            except KafkaError as exc:  # fenced: the partition's new owner aborted it already
                logger.warning("aborting the transaction of partition %d: %r", source, exc)
        self._open.clear()


def outbox_for(settings: Settings, group: str, consumer: AIOKafkaConsumer) -> Outbox:
    """The outbox of the configured processing guarantee."""
    kind = ExactlyOnceOutbox if settings.processing_guarantee == "exactly_once" else AtLeastOnceOutbox
    return kind(settings, group, consumer)
