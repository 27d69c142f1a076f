"""Writing to lo_stream's topics: events (packed per student), dead letters, rosters.

Responsibilities:

1. one idempotent aiokafka producer per process, waiting for every in-sync replica (``acks=all``),
   so that "sent" means "stored";
2. pack a student's envelopes into as few messages as the size limit allows (the worker's cost
   is per message, not per event), keeping their order;
3. dead-letter what a connector could not use, with the reason and the raw input.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from lo_stream.dead_letters import dead_letter_record
from lo_stream.envelopes import encode_message
from lo_stream.settings import Settings

__all__ = ["MAX_MESSAGE_BYTES", "EventProducer", "pack"]

# Kafka refuses messages over ~1 MB by default; stay well below with room for the list syntax.
MAX_MESSAGE_BYTES = 512 * 1024


def pack(envelopes: list[dict], limit: int = MAX_MESSAGE_BYTES) -> list[list[dict]]:
    """Split one student's envelopes, in order, into runs whose encoded size stays under `limit`
    (an envelope larger than `limit` travels alone).

    >>> [len(run) for run in pack([{"n": i} for i in range(5)], limit=20)]
    [2, 2, 1]
    """
    runs: list[list[dict]] = []
    run: list[dict] = []
    size = 2  # the brackets of a list
    for envelope in envelopes:
        envelope_size = len(orjson.dumps(envelope)) + 1
        if run and size + envelope_size > limit:
            runs.append(run)
            run, size = [], 2
        run.append(envelope)
        size += envelope_size
    if run:
        runs.append(run)
    return runs


class EventProducer:
    """Produce envelopes, dead letters and roster records to one deployment's topics.

    >>> async def example(settings, envelopes):
    ...     async with EventProducer(settings) as producer:
    ...         await producer.send_envelopes("ana", envelopes)
    """

    def __init__(self, settings: Settings, *, linger_ms: int = 5) -> None:
        self.settings = settings
        self.linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> "EventProducer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        # Made here, not in __init__: aiokafka binds the producer to the running loop.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            acks="all",
            enable_idempotence=True,  # retries neither duplicate nor reorder a student's events
            linger_ms=self.linger_ms,
            max_request_size=2 * MAX_MESSAGE_BYTES,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send_envelopes(self, student: str, envelopes: list[dict]) -> list[RecordMetadata]:
        """Store one student's envelopes, in order; return once the broker has them all."""
        return [await ack for ack in await self.queue_envelopes(student, envelopes)]

    async def queue_envelopes(self, student: str, envelopes: list[dict]) -> list[Any]:
        """Hand envelopes to the producer without waiting for the broker; await the returned
        futures (or call `flush`) to know they are stored. For bulk loads."""
        return [await self._queue_run(student, run) for run in pack(envelopes)]

    async def send_run(self, student: str, run: list[dict]) -> RecordMetadata:
        """Store one run of a student's envelopes as made by `pack`: one message, stored whole or not at all."""
        return await (await self._queue_run(student, run))

    async def _queue_run(self, student: str, run: list[dict]) -> Any:
        return await self._producer.send(self.settings.topics.events, key=student.encode(), value=encode_message(run))

    async def flush(self) -> None:
        await self._producer.flush()

    async def send_dead_letter(self, reason: str, raw: Any, *, stage: str, key: str | None = None, **context: Any) -> None:
        await self._producer.send_and_wait(
            self.settings.topics.dead_letters,
            key=(key or "").encode(),
            value=dead_letter_record(reason, raw, stage=stage, **context),
        )

    async def send_record(self, topic: str, key: str, value: Any) -> RecordMetadata:
        """One JSON record on a keyed topic (rosters, courses); returns once stored."""
        return await self._producer.send_and_wait(topic, key=key.encode(), value=orjson.dumps(value))
