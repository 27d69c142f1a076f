"""Messages Faust skipped on a source partition are read back from the broker, in order (`lo_stream.agents.gaps`)."""

from __future__ import annotations

import orjson
import pytest
from faust.types import TP

from lo_stream.agents.gaps import GapGuard
from lo_stream.topics import ensure_topics
from tests.support import envelope, produce

pytestmark = pytest.mark.kafka


class Seen:
    """The part of a Faust message `GapGuard` reads: where it sits, and the consumer generation it came in."""

    def __init__(self, topic: str, partition: int, offset: int, generation_id: int = 1) -> None:
        self.tp = TP(topic, partition)
        self.offset = offset
        self.generation_id = generation_id


async def test_skipped_offsets_are_read_back_and_nothing_else(settings):
    settings = settings.model_copy(update={"partitions": 1})
    await ensure_topics(settings)
    produced = await produce(settings, [("s1", envelope("s1", event="keystroke", timestamp=i)) for i in range(10)])
    topic, partition = settings.topics.events, 0
    guard = GapGuard(None, settings)  # no Faust app: `settled` is not called here
    try:
        assert await guard.skipped(Seen(topic, partition, 2)) == []  # first message after an assignment
        assert await guard.skipped(Seen(topic, partition, 3)) == []  # the next one
        records = await guard.skipped(Seen(topic, partition, 8))  # 4..7 never reached the agent
        assert [r.offset for r in records] == [4, 5, 6, 7]
        assert [orjson.loads(r.value)["client"]["timestamp"] for r in records] == [4, 5, 6, 7]
        assert {r.key for r in records} == {b"s1"}
        assert await guard.skipped(Seen(topic, partition, 5)) == []  # a re-delivery after a seek back
        assert [r.offset for r in await guard.skipped(Seen(topic, partition, 7))] == [6]
        # A rebalance: the partition starts again from its commit, maybe moved on by another worker.
        assert await guard.skipped(Seen(topic, partition, 9, generation_id=2)) == []
    finally:
        await guard.stop()
    assert [offset for _, offset in produced] == list(range(10))



class StandInConsumer:
    """Faust's consumer as `GapGuard.settled` uses it: the gaps it is told about."""

    def __init__(self) -> None:
        self.gaps: list[tuple[TP, int, int]] = []

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        self.gaps.append((tp, offset_from, offset_to))


async def test_a_repaired_range_is_handed_to_faust_so_that_its_commits_move_on(settings):
    app = type("App", (), {"consumer": StandInConsumer()})()
    guard = GapGuard(app, settings)
    fetched: list[tuple[int, int]] = []

    async def fetch(tp, start, end):  # the broker's side is covered above
        fetched.append((start, end))
        return [f"record {offset}" for offset in range(start, end)]

    guard._fetch = fetch
    assert await guard.skipped(Seen("events", 0, 10)) == []
    await guard.settled(Seen("events", 0, 10))
    assert app.consumer.gaps == []  # nothing was skipped
    assert await guard.skipped(Seen("events", 0, 14)) == ["record 11", "record 12", "record 13"]
    await guard.settled(Seen("events", 0, 14))
    # Inclusive bounds, as Faust's own gaps (it counts them acknowledged).
    assert app.consumer.gaps == [(TP("events", 0), 11, 13)]
    await guard.settled(Seen("events", 0, 14))
    assert len(app.consumer.gaps) == 1  # once
    # Nothing is handed over for a message that revealed no gap, even after one that did.
    await guard.skipped(Seen("events", 1, 0))
    await guard.skipped(Seen("events", 1, 5))
    await guard.skipped(Seen("events", 1, 6))
    await guard.settled(Seen("events", 1, 6))
    assert fetched == [(11, 14), (1, 5)] and len(app.consumer.gaps) == 1
