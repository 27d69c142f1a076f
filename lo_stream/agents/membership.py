"""Leaving a consumer group as a static member (Kafka's KIP-345).

A worker joins its group with a stable ``group.instance.id`` (`Settings.group_instance_id`), so that
after a crash the restarted worker takes its partitions back at once, with no rebalance. The price:
a static member never leaves the group when its consumer closes, so a worker stopped on purpose
would hold its partitions until its session times out. `leave_group` removes it explicitly, as
Kafka's admin client does (``removeMembersFromConsumerGroup``: a LeaveGroup request, version 3,
naming the member by its instance id). aiokafka's own LeaveGroup stops at version 1, which
cannot name an instance, so the request is defined here.
"""

from __future__ import annotations

import logging
from typing import TypeAlias

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String

from lo_stream.settings import Settings

__all__ = ["leave_group"]

logger = logging.getLogger(__name__)

GROUP_COORDINATOR = 0


class _LeaveGroupResponse_v3(Response):
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")), ("error_code", Int16))),
    )


class _LeaveGroupRequest_v3(RequestStruct):
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = _LeaveGroupResponse_v3
    SCHEMA = Schema(
        ("group_id", String("utf-8")),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))),
    )


_Structs: TypeAlias = _LeaveGroupRequest_v3


class _RemoveStaticMember(Request[_Structs]):
    API_KEY = 13

    def __init__(self, group: str, instance_id: str) -> None:
        self._group = group
        self._instance_id = instance_id

    def build(self, request_struct_class: type[_Structs]) -> _Structs:
        # An unknown member id ("") with the instance id: the broker finds the member by the latter.
        return request_struct_class(self._group, [("", self._instance_id)])


async def leave_group(settings: Settings, group: str, instance_id: str) -> bool:
    """Remove the static member `instance_id` from `group` now; False (logged) when it could not."""
    client = AIOKafkaClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        await client.bootstrap()
        coordinator = await client.coordinator_lookup(GROUP_COORDINATOR, group)
        response = await client.send(coordinator, _RemoveStaticMember(group, instance_id))
        errors = [for_code(response.error_code)] + [for_code(code) for _, _, code in response.members]
        failed = [error for error in errors if error.errno != 0]
        if failed:
            logger.warning("leaving group %s as %s: %s", group, instance_id, failed[0].__name__)
            return False
        return True
    except (KafkaError, OSError, NotImplementedError) as exc:
        logger.warning("leaving group %s as %s failed (%r): the others take over when its session times out",
                       group, instance_id, exc)
        return False
    finally:
        await client.close()
