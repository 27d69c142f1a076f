"""The Kafka topics lo_stream owns, and creating them before anyone writes.

Topics are created explicitly (never by the broker's auto-create, which would pick its own
partition count): a table needs exactly as many partitions as the topic it is built from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2
from aiokafka.errors import TopicAlreadyExistsError

from lo_stream.settings import Settings

__all__ = ["TopicMismatchError", "TopicSpec", "ensure_topics", "partition_of", "topic_specs"]

# Replay means rewinding topics, so events and dead letters are kept until deleted on purpose.
KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}


class TopicMismatchError(RuntimeError):
    """An existing topic cannot be used as configured."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic of a deployment with its partition count and config."""
    names = settings.topics
    return [
        TopicSpec(names.events, settings.partitions, KEEP_FOREVER),
        TopicSpec(names.dead_letters, 1, KEEP_FOREVER),
        # One record per course (its whole roster; courses: its name and teachers): compaction
        # keeps the latest, so a reload replaces a course in one write.
        TopicSpec(names.rosters, 1, {"cleanup.policy": "compact"}),
        TopicSpec(names.courses, 1, {"cleanup.policy": "compact"}),
        # Who queried what, when: kept like the events.
        TopicSpec(names.audit, 1, KEEP_FOREVER),
        # Which version of each reducer serves queries: one record per reducer, the latest kept.
        TopicSpec(names.versions, 1, {"cleanup.policy": "compact"}),
        # The workers' shared secret, when the settings give none (lo_stream.query.cluster).
        TopicSpec(names.cluster, 1, {"cleanup.policy": "compact"}),
    ]


async def ensure_topics(settings: Settings, extra: Iterable[TopicSpec] = ()) -> list[str]:
    """Create the deployment's topics (and `extra` ones) that do not exist yet; return the names created.

    Raises `TopicMismatchError` when a topic exists with another partition count than the
    settings ask for (tables would silently lose co-partitioning).
    """
    specs = [*topic_specs(settings), *extra]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(spec.name, spec.partitions, settings.replication_factor, topic_configs=spec.config)
                        for spec in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass  # another process created it between our list and create
        described = await admin.describe_topics([spec.name for spec in specs if spec.name in existing])
        partitions = {topic["topic"]: len(topic["partitions"]) for topic in described}
        for spec in specs:
            found = partitions.get(spec.name, spec.partitions)
            if found != spec.partitions:
                raise TopicMismatchError(
                    f"topic {spec.name!r} has {found} partitions but lo_stream is configured for "
                    f"{spec.partitions}: set LO_STREAM_PARTITIONS={found}, or use a new LO_STREAM_TOPIC_PREFIX"
                )
        return [spec.name for spec in missing]
    finally:
        await admin.close()


def partition_of(settings: Settings, key: str) -> int:
    """The partition Kafka's default partitioner (murmur2, as every lo_stream producer uses) gives a key."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % settings.partitions
