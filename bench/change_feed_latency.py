"""How long from producing an event to a subscriber in another process seeing the table change.

    python bench/change_feed_latency.py [--rate 200] [--seconds 20] [--students 100]

Uses LO_STREAM_BROKER when set, else starts the embedded broker on free ports. Starts one
`lo-stream worker`, produces keystrokes at a steady rate whose client.timestamp is the send time,
and follows `lo_stream.writing.typing_speed` with a ChangeFeed: the newest timestamp in a change's
state is the send time of the event that caused it. Prints and saves p50/p90/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lo_stream.connectors.local_kafka import LocalKafka  # noqa: E402
from lo_stream.modules import load_modules  # noqa: E402
from lo_stream.reducers import registry  # noqa: E402
from lo_stream.settings import load_settings  # noqa: E402
from lo_stream.tables.change_feed import ChangeFeed  # noqa: E402
from lo_stream.topics import ensure_topics  # noqa: E402
from tests.support import ServiceProcess, envelope, free_port, free_port_pair  # noqa: E402


async def measure(settings, rate: float, seconds: float, students: int, log_dir: Path) -> list[float]:
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
            start = time.monotonic()
            for i in range(total):
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                student = f"s{i % students}"
                event = envelope(student, event="keystroke", timestamp=time.time() * 1000)
                await producer.send(settings.topics.events, key=student.encode(), value=orjson.dumps(event))
            await producer.stop()
            await asyncio.wait_for(following, timeout=120)
    finally:
        worker.stop()
    return latencies


async def warm_up(settings, producer, feed) -> None:
    """Wait until the worker is up and its table's changelog is followed."""
    event = envelope("warm-up", event="keystroke", timestamp=time.time() * 1000)
    await producer.send_and_wait(settings.topics.events, key=b"warm-up", value=orjson.dumps(event))
    async for change in feed:
        if change.key == "warm-up":
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200, help="events per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--students", type=int, default=100)
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "topic not found" until the worker makes it

    work = Path(tempfile.mkdtemp(prefix="lo-bench-"))
    broker = None
    if not os.environ.get("LO_STREAM_BROKER"):
        broker = LocalKafka(load_settings(kafka_port=free_port_pair(), data_dir=work))
        os.environ["LO_STREAM_BROKER"] = broker.start().bootstrap
    settings = load_settings(
        topic_prefix=f"bench-{uuid.uuid4().hex[:8]}", data_dir=work / "data", worker_port=free_port()
    )
    try:
        latencies = asyncio.run(measure(settings, args.rate, args.seconds, args.students, work))
    finally:
        if broker:
            broker.stop()
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    result = {
        "benchmark": "change_feed_latency",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {socket.gethostname()}",
        "python": platform.python_version(),
        "rate_events_per_s": args.rate,
        "events": len(latencies),
        "students": args.students,
        "latency_ms": {"p50": round(p50, 1), "p90": round(p90, 1), "p99": round(p99, 1), "max": round(max(latencies), 1)},
    }
    print(json.dumps(result, indent=2))
    out = REPO / "bench" / "results" / f"change_feed_latency-{args.rate:g}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
