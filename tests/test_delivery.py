"""Commits wait for the table writes they cover (`lo_stream.agents.delivery`), with a stand-in producer."""

from __future__ import annotations

import asyncio

import pytest

from lo_stream.agents.delivery import DeliveryError, track_deliveries


class StandInProducer:
    """Faust's producer surface that `track_deliveries` wraps: a buffer, flush, and transaction commit."""

    def __init__(self) -> None:
        self.queued: list[asyncio.Future] = []
        self.buffer = type("Buffer", (), {"put": self.queued.append})()
        self.calls: list[str] = []

    async def flush(self) -> None:
        self.calls.append("flush")

    async def commit_transactions(self, offsets: dict, group_id: str) -> None:
        self.calls.append(f"commit {offsets} {group_id}")


def queue_record(producer: StandInProducer) -> asyncio.Future:
    record = asyncio.get_running_loop().create_future()
    producer.buffer.put(record)
    return record


@pytest.mark.parametrize("commit", ["flush", "commit_transactions"])
async def test_a_commit_waits_until_every_queued_record_is_acknowledged(commit):
    producer = track_deliveries(StandInProducer())
    first, second = queue_record(producer), queue_record(producer)
    assert producer.queued == [first, second]  # still handed on to Faust's buffer
    call = producer.flush() if commit == "flush" else producer.commit_transactions({"tp": 5}, "group")
    committing = asyncio.create_task(call)
    await asyncio.sleep(0.3)  # Faust's own flush gives up after 0.1 s
    assert not committing.done() and producer.calls == []
    first.set_result("acked")
    await asyncio.sleep(0.05)
    assert not committing.done()
    second.set_result("acked")
    await asyncio.wait_for(committing, 5)
    assert producer.calls == ["flush" if commit == "flush" else "commit {'tp': 5} group"]


async def test_with_nothing_queued_a_commit_goes_straight_through():
    producer = track_deliveries(StandInProducer())
    queue_record(producer).set_result("acked")
    await asyncio.wait_for(producer.flush(), 1)
    assert producer.calls == ["flush"]


async def test_a_refused_record_stops_every_later_commit():
    producer = track_deliveries(StandInProducer())
    queue_record(producer).set_exception(OSError("broker gone"))
    for _ in range(2):  # a later commit would cover the lost record too
        with pytest.raises(DeliveryError, match="broker gone.*restart the worker"):
            await producer.flush()
    assert producer.calls == []


async def test_a_record_never_acknowledged_fails_the_commit_after_the_timeout():
    producer = track_deliveries(StandInProducer(), timeout=0.2)
    queue_record(producer)
    with pytest.raises(DeliveryError, match="1 queued records were not acknowledged by Kafka within 0.2s"):
        await producer.commit_transactions({}, "group")
    assert producer.calls == []


async def test_records_queued_during_a_commit_belong_to_the_next_one():
    """Under a steady stream of events there is always a record in flight; a commit must not wait for those."""
    producer = track_deliveries(StandInProducer())
    before = queue_record(producer)
    committing = asyncio.create_task(producer.flush())
    await asyncio.sleep(0.05)
    queue_record(producer)  # written while the commit waits, never acknowledged in this test
    before.set_result("acked")
    await asyncio.wait_for(committing, 1)
    assert producer.calls == ["flush"]
