"""lo_stream creates its own topics with the partitions its tables need, and refuses a mismatch."""

from __future__ import annotations

import os

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from lo_stream.topics import TopicMismatchError, ensure_topics
from tests.support import lo_stream_command

pytestmark = pytest.mark.kafka


async def describe(settings, names):
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        config = {}
        for response in configs:
            for resource in response.resources:
                config[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}
        return partitions, config
    finally:
        await admin.close()


async def test_topics_are_created_once_with_partitions_and_retention(settings):
    names = settings.topics
    created = await ensure_topics(settings)
    every = [names.events, names.dead_letters, names.rosters, names.courses, names.audit, names.versions, names.cluster]
    assert sorted(created) == sorted(every)
    assert await ensure_topics(settings) == []  # idempotent

    partitions, config = await describe(settings, every)
    assert partitions[names.events] == settings.partitions
    assert config[names.events]["retention.ms"] == "-1"  # replay needs every event
    assert config[names.dead_letters]["retention.ms"] == "-1"
    assert config[names.rosters]["cleanup.policy"] == "compact"
    assert config[names.courses]["cleanup.policy"] == "compact"
    assert config[names.audit]["retention.ms"] == "-1"
    assert config[names.versions]["cleanup.policy"] == "compact"
    assert config[names.cluster]["cleanup.policy"] == "compact"


async def test_existing_topic_with_other_partitions_is_refused(settings):
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    await admin.create_topics([NewTopic(settings.topics.events, 2, 1)])
    await admin.close()

    with pytest.raises(TopicMismatchError) as error:
        await ensure_topics(settings)
    message = str(error.value)
    assert f"{settings.topics.events!r} has 2 partitions" in message
    assert "LO_STREAM_PARTITIONS=2" in message

    worker = lo_stream_command("worker", env={**os.environ, **settings.as_env()}, timeout=120)
    assert worker.returncode == 1
    assert "has 2 partitions" in worker.stderr and "Traceback" not in worker.stderr
