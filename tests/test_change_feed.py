"""The change feed: another process sees every table change, with the offset of its event. The
engine writes a key once per batch, so a change may cover several events: its count is then the
number of the student's events up to the offset it carries."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from lo_stream.modules import load_modules
from lo_stream.reducers import registry
from lo_stream.tables.change_feed import ChangeFeed
from lo_stream.topics import ensure_topics
from tests.support import ServiceProcess, envelope, produce

pytestmark = pytest.mark.kafka


async def test_subscriber_sees_every_change_in_order(settings, tmp_path):
    await ensure_topics(settings)
    load_modules()
    counter = registry.get("lo_stream.writing.event_count")
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    seen: dict[str, list] = defaultdict(list)
    partitions: dict[str, set] = defaultdict(set)
    try:
        # Subscribe before the worker has created the table: the feed must find it when it appears.
        async with ChangeFeed(settings, [counter], from_beginning=True) as feed:
            produced = await produce(
                settings, [(f"s{i % 5}", envelope(f"s{i % 5}", event="keystroke", timestamp=i)) for i in range(50)]
            )

            async def collect() -> None:
                async for change in feed:
                    assert (change.reducer_id, change.version) == ("lo_stream.writing.event_count", 1)
                    seen[change.key].append((change.state["count"], change.offset))
                    partitions[change.key].add(change.partition)
                    if len(seen) == 5 and all(changes[-1][0] == 10 for changes in seen.values()):
                        return

            await asyncio.wait_for(collect(), timeout=120)
    finally:
        assert worker.stop() == 0, worker.log_tail()

    offsets_by_student: dict[str, list[int]] = defaultdict(list)
    for student, offset in produced:
        offsets_by_student[student].append(offset)
    # Changes in order, each carrying the offset of the last event it covers and the count up to it.
    for student, changes in seen.items():
        offsets = offsets_by_student[student]
        assert [offset for _, offset in changes] == sorted({offset for _, offset in changes}), changes
        assert all(count == sum(1 for o in offsets if o <= offset) for count, offset in changes), changes
        assert changes[-1] == (10, offsets[-1])
    assert all(len(p) == 1 for p in partitions.values())  # a student's events all live in one partition
