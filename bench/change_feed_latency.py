"""How long from sending an event to a subscriber in another process seeing the change it causes.

    python bench/change_feed_latency.py [--via producer|gateway] [--rate 200] [--seconds 20] [--students 100]

Uses LO_STREAM_BROKER when set, else starts the embedded broker on free ports. Starts one
`lo-stream worker` and sends keystrokes at a steady rate, each carrying its send time as
``client.timestamp``, spread evenly over the students:

- ``--via producer``: produced straight to the events topic (one event per message); followed
  with a `ChangeFeed` on ``lo_stream.writing.typing_speed``: the newest timestamp in a change's
  state is the send time of the event that caused it (one change per event);
- ``--via gateway``: sent through ``lo-stream gateway`` (one websocket per student, which packs
  what arrives while a write is in flight); followed by a live query on the worker's
  ``/wsapi/query`` (``writing.course_overview`` of a course holding every student, as the
  dashboards subscribe). An update row's ``last_active`` is the newest send time it reflects;
  every event sent at or before it is counted as seen then (updates coalesce changes).

Prints and saves p50/p90/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gateway_throughput import keystroke, start_gateway  # noqa: E402
from bench.harness import (  # noqa: E402
    GatewayClient,
    bench_settings,
    environment,
    kafka,
    percentiles,
    save_result,
    student_name,
)
from lo_stream.connectors.rosters import roster_student, write_course  # noqa: E402
from lo_stream.envelopes import Identity  # noqa: E402
from lo_stream.modules import load_modules  # noqa: E402
from lo_stream.query.access import UserStore  # noqa: E402
from lo_stream.reducers import registry  # noqa: E402
from lo_stream.tables.change_feed import ChangeFeed  # noqa: E402
from lo_stream.topics import ensure_topics  # noqa: E402
from tests.support import ServiceProcess, envelope, free_port  # noqa: E402

COURSE = "bench-course"
FOLLOW_TIMEOUT_S = 120
"""How long after the last event is sent the subscriber waits for the changes still to come."""


class Paced:
    """0 .. total-1, the i-th at start + i / rate; `achieved` is the rate the sender really kept
    (it falls behind when the machine cannot send that fast)."""

    def __init__(self, rate: float, total: int) -> None:
        self.rate, self.total, self.achieved = rate, total, 0.0

    async def __aiter__(self) -> AsyncIterator[int]:
        start = time.monotonic()
        for i in range(self.total):
            await asyncio.sleep(max(0.0, start + i / self.rate - time.monotonic()))
            yield i
        self.achieved = self.total / max(time.monotonic() - start, 1e-9)


async def via_producer(settings, rate: float, seconds: float, students: int, log_dir: Path) -> tuple[list[float], float]:
    await ensure_topics(settings)
    load_modules()
    reducer = registry.get("lo_stream.writing.typing_speed")
    worker = ServiceProcess(settings, log_dir / "worker.log").start()
    latencies: list[float] = []
    try:
        async with ChangeFeed(settings, [reducer], from_beginning=True) as feed:
            producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=0)
            await producer.start()
            await warm_up(settings, producer, feed)
            total = int(rate * seconds)

            async def follow() -> None:
                async for change in feed:
                    latencies.append(time.time() * 1000 - change.state["timestamps"][-1])
                    if len(latencies) >= total:
                        return

            following = asyncio.create_task(follow())
            pace = Paced(rate, total)
            async for i in pace:
                student = f"s{i % students}"
                event = envelope(student, event="keystroke", timestamp=time.time() * 1000)
                await producer.send(settings.topics.events, key=student.encode(), value=orjson.dumps(event))
            await producer.stop()
            await asyncio.wait_for(following, timeout=120)
    finally:
        worker.stop()
    return latencies, pace.achieved


async def warm_up(settings, producer, feed) -> None:
    """Wait until the worker is up and its table's changelog is followed."""
    event = envelope("warm-up", event="keystroke", timestamp=time.time() * 1000)
    await producer.send_and_wait(settings.topics.events, key=b"warm-up", value=orjson.dumps(event))
    async for change in feed:
        if change.key == "warm-up":
            return


async def via_gateway(settings, rate: float, seconds: float, students: int, log_dir: Path) -> tuple[list[float], float]:
    await ensure_topics(settings)
    names = [student_name(i) for i in range(students)]
    identities = {name: Identity.test_case(name) for name in names}  # as the gateway records them
    await write_course(settings, {"course_id": COURSE, "name": "Bench", "teachers": []},
                       [roster_student(i.user_id, "Given", name, key=i.safe_user_id) for name, i in identities.items()])
    token = UserStore(settings.users_file).add("bench", "admin")
    worker = ServiceProcess(settings, log_dir / "worker.log").start()
    gateway, gateway_url = await start_gateway(settings, log_dir)
    worker_url = f"http://{settings.bind_host}:{settings.worker_port}"
    sent: dict[str, collections.deque] = {i.safe_user_id: collections.deque() for i in identities.values()}
    latencies: list[float] = []
    try:
        await worker.wait_until_serving(f"{worker_url}/metrics")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:  # a connection per student
            subscriber = await http.ws_connect(f"{worker_url}/wsapi/query?token={token}")
            await subscriber.send_str(orjson.dumps(  # the query API reads text frames only
                {"subscribe": "live", "export": "writing.course_overview", "params": {"course_id": COURSE}}).decode())
            clients = {name: await GatewayClient.connect(http, gateway_url, name) for name in names}
            await first_result(subscriber)
            total = int(rate * seconds)

            async def follow() -> None:
                while len(latencies) < total:
                    message = orjson.loads((await subscriber.receive()).data)
                    now = time.time() * 1000
                    for row in message.get("rows") or message.get("result") or []:
                        pending, seen = sent[row["key"]["student"]], row.get("last_active")
                        while pending and seen is not None and pending[0] <= seen:
                            latencies.append(now - pending.popleft())

            following = asyncio.create_task(follow())
            pace = Paced(rate, total)
            async for i in pace:
                name = names[i % students]
                event = keystroke(name)
                sent[identities[name].safe_user_id].append(event["timestamp"])
                await clients[name].send(event)
            # An overloaded worker may take long to catch up: report what it did not show in time.
            await asyncio.wait([following], timeout=FOLLOW_TIMEOUT_S)
            following.cancel()
            for client in clients.values():
                await client.close()
            await subscriber.close()
    finally:
        gateway.stop()
        worker.stop()
    return latencies, pace.achieved


async def first_result(subscriber: aiohttp.ClientWebSocketResponse) -> None:
    """The subscription's full result: the worker is up and the query is live."""
    reply = orjson.loads((await subscriber.receive(timeout=120)).data)
    if reply.get("type") != "result":
        raise RuntimeError(f"the live query was not accepted: {reply}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--via", choices=("producer", "gateway"), default="producer")
    parser.add_argument("--rate", type=float, default=200, help="events per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--students", type=int, default=100)
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "topic not found" until the worker makes it
    result = run(args.via, args.rate, args.seconds, args.students)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


def run(via: str, rate: float, seconds: float, students: int) -> dict:
    """Measure on a broker of its own (or LO_STREAM_BROKER); save and return the result."""
    work = Path(tempfile.mkdtemp(prefix="lo-bench-"))
    with kafka(work) as broker:
        settings = bench_settings(broker, work, f"latency-{via}", gateway_port=free_port(),
                                  gateway_insecure_identity=True, modules="writing")
        measure = via_gateway if via == "gateway" else via_producer
        latencies, achieved = asyncio.run(measure(settings, rate, seconds, students, work))
        result = {
            "benchmark": "change_feed_latency" if via == "producer" else "gateway_to_query_latency",
            **environment(broker),
            "rate_events_per_s": rate,
            "sent_events_per_s": round(achieved, 1),  # below the rate: the sender could not keep it
            "events": int(rate * seconds),
            "events_seen": len(latencies),  # the rest did not show within FOLLOW_TIMEOUT_S of the last send
            "students": students,
            "latency_ms": percentiles(latencies),
        }
    name = "change_feed_latency" if via == "producer" else "gateway_query_latency"
    save_result(f"{name}-{rate:g}", result)
    return result


if __name__ == "__main__":
    main()
