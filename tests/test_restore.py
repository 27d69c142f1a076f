"""Tables: entries staged until their changelog records are acknowledged, stores restored from
their changelogs (from their checkpoint on), and no read answered before a restore is done."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from lo_stream.query import server
from lo_stream.query.executor import Unavailable
from lo_stream.reducers import ReducerRegistry, student_event_reducer
from lo_stream.tables import changelog_key, changelog_spec
from lo_stream.tables.restore import restore
from lo_stream.tables.store import Table
from lo_stream.topics import ensure_topics, partition_of

registry = ReducerRegistry()


@student_event_reducer(null_state={"count": 0}, registry=registry)
def counts(event, state):
    return {"count": state["count"] + 1}


COUNTS = next(iter(registry))


def entry(count: int) -> bytes:
    return orjson.dumps({"state": {"count": count}, "partition": 0, "offset": count, "applied": {"0": [count, 0]}})


def test_a_staged_entry_is_read_at_once_and_stored_only_by_a_flush(settings, tmp_path):
    table = Table(settings, COUNTS, tmp_path / "tables")
    store = table.open(0)
    table.stage(0, {"s1": entry(1)})
    assert table.entry(0, "s1")["state"] == {"count": 1}
    assert store.get("s1") is None and store.checkpoint is None  # not acknowledged yet
    table.flush({0: 41})
    assert orjson.loads(store.get("s1"))["state"] == {"count": 1} and store.checkpoint == 41
    table.stage(0, {"s1": entry(2)})
    table.discard_pending()  # a failed commit
    assert table.entry(0, "s1")["state"] == {"count": 1}
    table.close_all()


async def test_a_store_is_restored_from_its_changelog_from_its_checkpoint_on(settings, tmp_path):
    await ensure_topics(settings, [changelog_spec(settings, COUNTS)])
    changelog = f"{settings.app_id}-{COUNTS.table_name}-changelog"
    students = [s for s in (f"s{i}" for i in range(40)) if partition_of(settings, s) == 0][:4]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        async def write(key: str, value: bytes | None) -> int:
            return (await producer.send_and_wait(changelog, value, key=changelog_key(key), partition=0)).offset

        for count in (1, 2, 3):
            for student in students:
                await write(student, entry(count))
        await write(students[3], None)  # a tombstone: `lo-stream replay` cleared it

        table = Table(settings, COUNTS, tmp_path / "tables")
        assert await restore(settings, [table], [0]) == 13
        assert {s: (table.get(s) or {}).get("state") for s in students} == {
            **{s: {"count": 3} for s in students[:3]}, students[3]: None}
        assert table.stores[0].checkpoint == 12
        table.close_all()

        last = await write(students[0], entry(4))
        table = Table(settings, COUNTS, tmp_path / "tables")
        assert await restore(settings, [table], [0]) == 1  # only what came after the checkpoint
        assert table.get(students[0])["state"] == {"count": 4}
        assert table.stores[0].checkpoint == last
        # A store ahead of its changelog (the topic was deleted and made again) is rebuilt.
        table.stores[0].write({"ghost": entry(9)}, checkpoint=10_000)
        table.close_all()
        table = Table(settings, COUNTS, tmp_path / "tables")
        assert await restore(settings, [table], [0]) == 14
        assert table.get("ghost") is None and table.get(students[0])["state"] == {"count": 4}
        table.close_all()
    finally:
        await producer.stop()


async def test_a_table_read_waits_until_a_rebalance_has_restored_the_tables(settings, tmp_path, monkeypatch):
    table = Table(settings, COUNTS, tmp_path / "tables")
    table.open(partition_of(settings, "s1")).write({"s1": entry(3)}, checkpoint=0)
    engine = SimpleNamespace(
        restored=asyncio.Event(), tables={COUNTS.id: table}, assignor=SimpleNamespace(url="http://worker-1:6066"),
    )
    reader = server.WorkerTableReader(engine, settings)

    read = asyncio.create_task(reader.read_restored(table.name, ["s1", "s2"]))
    await asyncio.sleep(0.1)
    assert not read.done()  # a rebalance is restoring: the store holds only part of its changelog
    engine.restored.set()
    values = await read
    assert values["s1"]["state"] == {"count": 3} and values["s2"] is None

    engine.restored.clear()
    monkeypatch.setattr(server, "RESTORE_TIMEOUT", 0.1)
    with pytest.raises(Unavailable, match="worker-1:6066 is still restoring its tables"):
        await reader.read_restored(table.name, ["s1"])
    table.close_all()


pytestmark = pytest.mark.kafka
