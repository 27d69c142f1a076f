"""How many events/s the ingest gateway accepts and acknowledges over websockets.

    python -m bench.gateway_throughput [--connections 50] [--seconds 15] [--window 500]

Starts `lo-stream gateway` (development identity), opens one websocket per student, and has
every connection send keystroke events as fast as they are acknowledged (at most --window
unacknowledged each) for --seconds. An acknowledgement means the event is stored in Kafka
(``acks=all``). Figure: acknowledged events per second, and the gateway's CPU and memory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from bench.harness import SOURCE, GatewayClient, ProcessTreeSampler, bench_settings, environment, kafka, student_name
from lo_stream.settings import Settings
from lo_stream.topics import ensure_topics
from tests.support import ServiceProcess, free_port

__all__ = ["measure", "start_gateway"]


async def start_gateway(settings: Settings, log_dir: Path) -> tuple[ServiceProcess, str]:
    """`lo-stream gateway` for `settings` (which must allow the development identity); its URL."""
    await ensure_topics(settings)
    gateway = ServiceProcess(settings, log_dir / f"{settings.topic_prefix}-gateway.log", command=ServiceProcess.GATEWAY)
    gateway.start()
    base = f"http://{settings.bind_host}:{settings.gateway_port}"
    await gateway.wait_until_serving(f"{base}/healthz")
    return gateway, base


def keystroke(student: str) -> dict:
    return {"event": "keystroke", "source": SOURCE, "doc_id": f"doc-{student[-1]}", "timestamp": time.time() * 1000}


async def measure(settings: Settings, connections: int, seconds: float, window: int, log_dir: Path) -> dict:
    gateway, base = await start_gateway(settings, log_dir)
    sampler = ProcessTreeSampler(gateway.process.pid)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:  # a connection per student
            clients = [await GatewayClient.connect(http, base, student_name(i)) for i in range(connections)]
            deadline = time.monotonic() + seconds

            async def pump(client: GatewayClient) -> None:
                while time.monotonic() < deadline:
                    await client.send(keystroke(client.student), window=window)

            async def sample() -> None:
                while time.monotonic() < deadline:
                    sampler.sample()
                    await asyncio.sleep(0.5)

            cpu_before = (sampler.sample(), sampler.cpu_seconds)[1]
            await asyncio.gather(sample(), *(pump(client) for client in clients))
            acked = sum(client.acked for client in clients)
            sampler.sample()
            cpu = sampler.cpu_seconds - cpu_before
            for client in clients:
                await client.wait_acked(timeout=60)
                await client.close()
    finally:
        gateway.stop()
    return {
        "connections": connections,
        "seconds": seconds,
        "window": window,
        "events_acknowledged": acked,
        "events_per_s": round(acked / seconds),
        "gateway_cpu_s": round(cpu, 1),
        "gateway_peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--window", type=int, default=500, help="unacknowledged events per connection")
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    work = Path(tempfile.mkdtemp(prefix="lo-bench-"))
    with kafka(work) as broker:
        settings = bench_settings(broker, work, "gateway", gateway_port=free_port(), gateway_insecure_identity=True)
        result = asyncio.run(measure(settings, args.connections, args.seconds, args.window, work))
        print(orjson.dumps({**environment(broker), "gateway": result}, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
