"""After a rebalance no source message is fetched before its partition is seeked to its commit and
the streams take messages again (`lo_stream.tables.recovery`); Faust's own recovery is the control.
Tables are read only once restored."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust
import pytest
from faust.tables.recovery import Recovery
from faust.types import TP

from lo_stream.query import server
from lo_stream.query.executor import Unavailable
from lo_stream.tables.recovery import SeekFirstRecovery, SeekFirstTableManager

EVENTS, CHANGELOG = TP("app.events", 0), TP("app-counts-changelog", 0)


class Signal:
    async def send(self) -> None:
        pass


class StandInConsumer:
    """Faust's consumer as the recovery drives it, recording what it is asked, in order."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.paused = {EVENTS, CHANGELOG}

    def assignment(self) -> set[TP]:
        return {EVENTS, CHANGELOG}

    def resume_partitions(self, tps) -> None:
        tps = set(tps)
        self.paused -= tps
        if EVENTS in tps:
            self.calls.append("events fetchable")

    async def perform_seek(self) -> None:
        self.calls.append("seek")

    def resume_flow(self) -> None:
        self.calls.append("consumer flow on")


def _recovery(cls: type[Recovery], calls: list[str]) -> Recovery:
    consumer = StandInConsumer(calls)
    flow_control = SimpleNamespace(resume=lambda: calls.append("streams flow on (their queues cleared)"))
    fetcher = SimpleNamespace(maybe_start=_nothing)
    app = SimpleNamespace(
        conf=SimpleNamespace(stream_recovery_delay=0, broker_request_timeout=10),
        consumer=consumer, consumer_generation_id=1, flow_control=flow_control, _fetcher=fetcher,
        on_rebalance_complete=Signal(), on_rebalance_end=lambda: None,
    )
    tables = SimpleNamespace(changelog_topics={CHANGELOG.topic}, on_actives_ready=lambda: None,
                             on_standbys_ready=lambda: None, values=lambda: [])
    app.assignor = SimpleNamespace(assigned_standbys=lambda: set())
    return cls(app, tables)


async def _nothing() -> None:
    pass


@pytest.mark.parametrize("step", ["_resume_streams", "on_recovery_completed"])
async def test_source_partitions_are_fetchable_only_once_seeked_and_flowing(step):
    calls: list[str] = []
    recovery = _recovery(SeekFirstRecovery, calls)
    await getattr(recovery, step)(generation_id=1)
    assert calls == ["seek", "streams flow on (their queues cleared)", "consumer flow on", "events fetchable"]
    assert recovery.app.consumer.paused == {CHANGELOG}
    # The consumer is itself again afterwards.
    assert recovery.app.consumer.resume_partitions.__func__ is StandInConsumer.resume_partitions


@pytest.mark.parametrize("step", ["_resume_streams", "on_recovery_completed"])
async def test_faust_alone_fetches_them_during_the_seek(step):
    calls: list[str] = []
    await getattr(_recovery(Recovery, calls), step)(generation_id=1)
    assert calls == ["events fetchable", "seek", "streams flow on (their queues cleared)", "consumer flow on"]


async def test_a_table_read_waits_until_a_rebalance_has_restored_the_tables(monkeypatch):
    manager = SeekFirstTableManager(faust.App("restore-test", store="memory://"))
    manager.data["counts"] = {"s1": {"count": 3}}  # a stand-in for the table
    app = SimpleNamespace(tables=manager, conf=SimpleNamespace(canonical_url="http://worker-1:6066"))
    reader = server.WorkerTableReader(app, settings=None, tables={})

    manager.on_rebalance_start()
    read = asyncio.create_task(reader.read_restored("counts", ["s1", "s2"]))
    await asyncio.sleep(0.1)
    assert not read.done()  # the store holds only part of the changelog yet
    manager.on_actives_ready()
    assert await read == {"s1": {"count": 3}, "s2": None}

    manager.on_rebalance_start()
    monkeypatch.setattr(server, "RESTORE_TIMEOUT", 0.1)
    with pytest.raises(Unavailable, match="worker-1:6066 is still restoring its tables"):
        await reader.read_restored("counts", ["s1"])
