"""How a consumer group's partitions are spread over the workers, and who holds what.

Every table partition lives with the source partition of the same number (the events topic and
each repartition topic have as many partitions as the tables), so a worker is given partition
numbers, not topic partitions: number ``n`` of every topic goes to the same worker. Numbers are
spread evenly, in order of the workers' ids (their static member ids), so a restarted worker
gets back the same numbers.

Each member tells the group its query URL; the leader hands every member the map of partition
number to URL, which the query layer uses to read a key from the worker that holds it.
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping

import orjson
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

__all__ = ["CoPartitionedAssignor", "spread"]

logger = logging.getLogger(__name__)


def spread(numbers: list[int], members: list[str]) -> dict[int, str]:
    """Partition numbers over members in contiguous, even ranges, the first members taking one more.

    >>> spread([0, 1, 2, 3, 4], ["a", "b"])
    {0: 'a', 1: 'a', 2: 'a', 3: 'b', 4: 'b'}
    """
    per, extra = divmod(len(numbers), len(members))
    owners, start = {}, 0
    for i, member in enumerate(members):
        length = per + (1 if i < extra else 0)
        for number in numbers[start:start + length]:
            owners[number] = member
        start += length
    return owners


class CoPartitionedAssignor(AbstractPartitionAssignor):
    """An aiokafka partition assignor (one instance per worker). Responsibilities:

    1. tell the group this worker's id and query URL (member metadata);
    2. as the group's leader, give each member the same partition numbers of every topic it reads;
    3. keep, from its own assignment, which URL holds each partition number (`owners`).
    """

    name = "lo_stream-copartitioned"
    version = 0

    def __init__(self, worker_id: str, url: str) -> None:
        self.worker_id = worker_id
        self.url = url
        self.owners: dict[int, str] = {}

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        user_data = orjson.dumps({"id": self.worker_id, "url": self.url})
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), user_data)

    def assign(
        self, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        about = {member: orjson.loads(metadata.user_data or b"{}") for member, metadata in members.items()}
        order = sorted(members, key=lambda member: (about[member].get("id", ""), member))
        partitions: dict[str, list[int]] = {}
        for metadata in members.values():
            for topic in metadata.subscription:
                found = cluster.partitions_for_topic(topic)
                if found is None:
                    logger.warning("no partitions known for topic %s yet", topic)
                    continue
                partitions[topic] = sorted(found)
        numbers = sorted({n for found in partitions.values() for n in found})
        owner_of = spread(numbers, order)
        user_data = orjson.dumps({"owners": {str(n): about[owner_of[n]].get("url", "") for n in numbers}})
        assignment = {}
        for member, metadata in members.items():
            topics = [
                (topic, [n for n in partitions[topic] if owner_of[n] == member])
                for topic in sorted(metadata.subscription) if topic in partitions
            ]
            assignment[member] = ConsumerProtocolMemberAssignment(self.version, topics, user_data)
        return assignment

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        owners = orjson.loads(assignment.user_data or b"{}").get("owners", {})
        self.owners = {int(number): url for number, url in owners.items()}
