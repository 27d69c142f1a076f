"""The secret a deployment's workers present to read each other's tables (``/api/internal/read``).

It is the `cluster_secret` setting when one is set. Otherwise the deployment makes its own: the
first worker that needs it writes a random one (``{"secret": ...}``) to the compacted topic
``<prefix>.cluster``, and every worker takes the first record of that topic. So the workers of a
deployment agree without any setting, and a caller without access to Kafka cannot read a table
(whoever can read Kafka's topics can read every event anyway).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from lo_stream.settings import Settings

__all__ = ["cluster_secret"]

READ_TIMEOUT_S = 30.0


async def cluster_secret(settings: Settings) -> str:
    """The setting, or the deployment's own secret (made now when there is none yet)."""
    if settings.cluster_secret:
        return settings.cluster_secret
    secret = await _first_secret(settings)
    if secret is None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True)
        await producer.start()
        try:  # a key of its own: two workers making one at once both keep theirs, and both take the first
            await producer.send_and_wait(settings.topics.cluster, key=f"secret-{uuid.uuid4()}".encode(),
                                         value=orjson.dumps({"secret": secrets.token_urlsafe(32)}), partition=0)
        finally:
            await producer.stop()
        secret = await _first_secret(settings)
    if secret is None:
        raise RuntimeError(f"the cluster secret written to {settings.topics.cluster} cannot be read back")
    return secret


async def _first_secret(settings: Settings) -> str | None:
    partition = TopicPartition(settings.topics.cluster, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign([partition])
        first = (await consumer.beginning_offsets([partition]))[partition]
        if first >= (await consumer.end_offsets([partition]))[partition]:
            return None
        consumer.seek(partition, first)
        record = await asyncio.wait_for(consumer.getone(partition), READ_TIMEOUT_S)
        return orjson.loads(record.value)["secret"]
    finally:
        await consumer.stop()
