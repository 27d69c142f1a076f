"""The worker's consumer hands Faust no record of a partition Faust has paused, so none is dropped
unprocessed (`lo_stream.agents.consumer`); Faust's own consumer is the control."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
from faust.transport import consumer as faust_consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP

from lo_stream.agents.consumer import ExactConsumer, _ConsumerThread

E0, E1 = TP("app.events", 0), TP("app.events", 1)
RECORDS = {E0: [SimpleNamespace(offset=5), SimpleNamespace(offset=6)], E1: [SimpleNamespace(offset=9)]}


class StandInAiokafka:
    """aiokafka's consumer as Faust's thread uses it: it waits for records while Faust pauses
    partitions in the set it was given, then hands out those of the set (an empty set means
    every partition, as in aiokafka)."""

    def __init__(self, while_waiting) -> None:
        self._closed = False
        self.asked: list[set[TP]] = []
        self._while_waiting = while_waiting
        self._fetcher = SimpleNamespace(
            _closed=False, _subscriptions=SimpleNamespace(fetch_context=contextlib.nullcontext),
            fetched_records=self._fetched_records,
        )

    async def _fetched_records(self, partitions, timeout=None, max_records=None):
        self._while_waiting()
        self.asked.append(set(partitions))
        return {tp: records for tp, records in RECORDS.items() if not partitions or tp in partitions}


def _thread(cls: type[AIOKafkaConsumerThread]) -> AIOKafkaConsumerThread:
    thread = cls.__new__(cls)  # only what _fetch_records reads
    thread.consumer = SimpleNamespace(flow_active=True)
    return thread


@pytest.mark.parametrize("cls", [_ConsumerThread, AIOKafkaConsumerThread], ids=["lo_stream", "faust"])
async def test_a_fetch_asks_for_the_partitions_active_when_it_starts_and_none_when_none_are(cls):
    active = {E0}
    aiokafka = StandInAiokafka(while_waiting=active.clear)  # the last active partition paused meanwhile
    records = await _thread(cls)._fetch_records(aiokafka, active, timeout=1.0)
    if cls is _ConsumerThread:
        assert set(records) == {E0}  # held back later if E0 is still paused (below)
        assert await _thread(cls)._fetch_records(aiokafka, set(), timeout=1.0) == {}
        assert aiokafka.asked == [{E0}]
    else:  # the emptied set reads as "every partition": E1 was never active
        assert set(records) == {E0, E1}


@pytest.mark.parametrize("cls", [ExactConsumer, Consumer], ids=["lo_stream", "faust"])
async def test_records_of_a_partition_paused_before_the_handover_are_fetched_again(cls, monkeypatch):
    active = {E0}

    async def fetched(self, timeout):  # Faust's fetch: it returned E0 and E1, and E1 is not active
        return dict(RECORDS), active

    monkeypatch.setattr(faust_consumer.Consumer, "_wait_next_records", fetched)
    consumer = cls.__new__(cls)
    consumer._buffered_partitions = set()
    seeks = []

    async def seek(tp, offset):
        seeks.append((tp, offset))

    consumer.seek = seek
    records, _ = await consumer._wait_next_records(1.0)
    if cls is ExactConsumer:
        assert records == {E0: RECORDS[E0]} and seeks == [(E1, 9)]
    else:  # Faust then drops E1's records as not active, and nothing fetches them again
        assert set(records) == {E0, E1} and seeks == []
