"""Exactness under faults, against an independent count of the events topic: while events flow, a
worker killed with SIGKILL again and again (once with its stores deleted), the broker restarted,
workers joining and leaving; afterwards every student's count equals the number of their events
in the topic, for every guarantee offered. Slow (a minute or two each): they run in CI all the same."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from lo_stream.connectors.auth import TokenStore
from lo_stream.connectors.local_kafka import LocalKafka
from lo_stream.topics import ensure_topics
from tests.support import ServiceProcess, envelope, free_port, free_port_pair, read_topic, wait_for_table

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENT_COUNT = "lo_stream.writing.event_count-v1"
STUDENTS = [f"s{i:03d}" for i in range(60)]


@pytest.fixture
def broker(tmp_path):
    """A broker of this test's own, so that it can be restarted."""
    from lo_stream.settings import load_settings

    local = LocalKafka(load_settings(kafka_port=free_port_pair(), data_dir=tmp_path / "kafka"))
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def chaos_settings(settings, broker):
    return settings.model_copy(update={"broker": f"127.0.0.1:{broker.settings.kafka_port}", "modules": "writing"})


class EventStream:
    """Events produced in small batches until stopped; some messages hold several events. Sends
    that fail while the broker is down are tried again later; the count is taken from the topic."""

    def __init__(self, settings, seed: int) -> None:
        self.settings = settings
        self.rng = random.Random(seed)
        self.stopping = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> "EventStream":
        self.task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self.stopping.set()
        await self.task

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, acks="all",
                                    request_timeout_ms=5000, retry_backoff_ms=200)
        await producer.start()
        try:
            while not self.stopping.is_set():
                sends = []
                for _ in range(40):
                    student = self.rng.choice(STUDENTS)
                    events = [envelope(student, event="keystroke", timestamp=time.time())
                              for _ in range(self.rng.choice([1, 1, 1, 3]))]
                    sends.append(producer.send(self.settings.topics.events, key=student.encode(),
                                               value=orjson.dumps(events[0] if len(events) == 1 else events)))
                try:
                    await asyncio.gather(*[await send for send in sends])
                except KafkaError:
                    await asyncio.sleep(0.5)  # the broker is restarting
                await asyncio.sleep(0.1)
        finally:
            await producer.stop()


async def assert_counts_match_the_topic(settings, worker: ServiceProcess) -> None:
    """Every student's event_count equals the number of their events in the events topic (an
    independent count): nothing lost, nothing counted twice."""
    counts: Counter[str] = Counter()
    for key, value in await read_topic(settings, settings.topics.events, latest_per_key=False):
        counts[key.decode()] += len(value) if isinstance(value, list) else 1
    assert sum(counts.values()) > 1000
    expected = {student: {"count": n} for student, n in counts.items()}
    await wait_for_table(settings, EVENT_COUNT, expected, worker, timeout=180, project=lambda v: v["state"])


async def first_events_applied(worker: ServiceProcess, settings, since: float, timeout: float = 120) -> float:
    """Seconds from `since` until a (re)started worker has applied events (its metrics say so)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"http://127.0.0.1:{settings.worker_port}/metrics") as response:
                    for line in (await response.text()).splitlines():
                        if line.startswith('lo_stream_reducer_events_total{reducer="lo_stream.writing.event_count"}'):
                            if float(line.rsplit(" ", 1)[1]) > 0:
                                return time.monotonic() - since
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"the restarted worker applied no event within {timeout}s:\n{worker.log_tail()}")


async def counts_match_then_stop(settings, worker: ServiceProcess) -> None:
    """Every student's count equals the topic's; then the worker stops cleanly (exit code 0)."""
    try:
        await assert_counts_match_the_topic(settings, worker)
    finally:
        assert worker.stop() == 0, worker.log_tail()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_kill_9_store_loss_and_a_broker_restart_lose_and_double_nothing(chaos_settings, broker, tmp_path, guarantee):
    settings = chaos_settings.model_copy(update={"processing_guarantee": guarantee})
    await ensure_topics(settings)
    rng = random.Random(11)
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    events = EventStream(settings, seed=5).start()
    restarts: list[float] = []
    try:
        await first_events_applied(worker, settings, time.monotonic())
        for round_ in range(6):
            await asyncio.sleep(rng.uniform(0.5, 4.0))
            worker.kill()
            if round_ == 2:
                shutil.rmtree(settings.data_dir / "worker")  # the local stores are gone too
            if round_ == 4:
                await asyncio.to_thread(broker.stop)
                await asyncio.sleep(1.0)
                await asyncio.to_thread(broker.start)  # it runs an event loop of its own
            started = time.monotonic()
            worker.start()
            restarts.append(await first_events_applied(worker, settings, started))
        await asyncio.sleep(2.0)
    finally:
        await events.stop()
    await counts_match_then_stop(settings, worker)
    report = {"guarantee": guarantee, "seconds_to_first_event_after_kill_9": [round(s, 2) for s in restarts]}
    Path(tmp_path / "restarts.json").write_text(json.dumps(report))
    print(report)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_workers_joining_and_leaving_lose_and_double_nothing(chaos_settings, tmp_path, guarantee):
    settings = chaos_settings.model_copy(update={"processing_guarantee": guarantee})
    second_settings = settings.model_copy(update={"data_dir": tmp_path / "second", "worker_port": free_port()})
    await ensure_topics(settings)
    first = ServiceProcess(settings, tmp_path / "first.log").start()
    second = ServiceProcess(second_settings, tmp_path / "second.log")
    events = EventStream(settings, seed=6).start()
    try:
        await asyncio.sleep(3)
        second.start()  # joins: the partitions are split
        await asyncio.sleep(4)
        assert first.stop() == 0, first.log_tail()  # leaves: the second takes everything
        await asyncio.sleep(3)
        first.start()  # joins again
        await asyncio.sleep(4)
        second.kill()  # dies: the first takes over once its session times out
        await asyncio.sleep(3)
        second.start()  # comes back under the same id: takes its partitions back at once
        await asyncio.sleep(4)
    finally:
        await events.stop()
    try:
        await assert_counts_match_the_topic(settings, first)
    finally:
        for worker in (first, second):
            if worker.process is not None and worker.process.poll() is None:
                assert worker.stop() == 0, worker.log_tail()


async def test_a_broker_outage_is_reported_in_a_few_lines_and_the_worker_carries_on_exactly(chaos_settings, broker,
                                                                                             tmp_path):
    """The broker down for 15 s while a worker runs and events keep coming: the worker's log says
    so in a few lines (not one per reconnect attempt), the worker outlives it, and afterwards every
    count equals the topic's."""
    settings = chaos_settings
    await ensure_topics(settings)
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    events = EventStream(settings, seed=9).start()
    try:
        await first_events_applied(worker, settings, time.monotonic())
        before = len(worker.log_file.read_text().splitlines())
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(15)
        during = worker.log_file.read_text().splitlines()[before:]
        await asyncio.to_thread(broker.start)
        await asyncio.sleep(5)
    finally:
        await events.stop()
    await counts_match_then_stop(settings, worker)
    assert 0 < len(during) <= 40, "\n".join(during[:80])  # it is reported, and not per retry


async def test_a_gateway_stops_within_seconds_of_sigterm_while_the_broker_is_down(chaos_settings, broker, tmp_path):
    """What it holds unacknowledged cannot be stored then; the client knows to send it again. It
    must not keep retrying for ever (and keep counting the connection) once told to stop."""
    settings = chaos_settings.model_copy(update={"gateway_port": free_port()})
    await ensure_topics(settings)
    token = TokenStore(settings.gateway_tokens_file).add("ana")
    gateway = ServiceProcess(settings, tmp_path / "gateway.log", ServiceProcess.GATEWAY).start()
    base = f"http://127.0.0.1:{settings.gateway_port}"
    await gateway.wait_until_serving(f"{base}/healthz")
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{base}/wsapi/in/?token={token}") as ws:
        await ws.send_str(json.dumps({"event": "keystroke", "n": 1}))
        while (reply := json.loads((await ws.receive(timeout=30)).data)).get("status") != "ack":
            assert reply["status"] == "auth", reply
        await asyncio.to_thread(broker.stop)
        for n in range(2, 5):
            await ws.send_str(json.dumps({"event": "keystroke", "n": n}))
        await asyncio.sleep(2)
        started = time.monotonic()
        code = await asyncio.to_thread(gateway.stop, 60)
        stopped_in = time.monotonic() - started
    await asyncio.to_thread(broker.start)
    assert code == 0, gateway.log_tail()
    assert stopped_in < 20, f"{stopped_in:.0f} s to stop:\n{gateway.log_tail()}"
    assert "closed: 3 unacknowledged events not stored" in gateway.log_file.read_text()
