"""Soak: steady traffic through the gateway with 1% hostile frames, for minutes.

    python -m bench.soak [--seconds 600] [--rate 200] [--students 50] [--hostile 0.01]

Starts a worker (the `writing` module) and `lo-stream gateway` (development identity), opens one
websocket per student and sends keystrokes at a steady total rate; about one frame in a hundred
is hostile, drawn in turn from what a careless or malicious client sends (not JSON, not an
object, no event type, wrongly typed fields, nesting 100 deep, an oversize frame, a lock_fields
that would poison every later event or grow without bound). Checked at the end, against what
was sent: every good event acknowledged and counted once in ``writing.event_count``; every
hostile frame answered with an error and dead-lettered; the gateway's and the worker's resident
memory sampled throughout. Flat means the last minute's median is within 10% of the second
minute's (the first is start-up). The worker runs with small RocksDB budgets
(``--table-memory-mb``, 4 by default) so that its write buffers fill and flush within the first
minute: at the default 32 MB, 20 stores take longer than a 10-minute soak to reach their bound,
and the growth towards it would hide a leak as well as show one. The RSS series is saved too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from bench.gateway_throughput import keystroke, start_gateway
from bench.harness import SOURCE, ProcessTreeSampler, bench_settings, environment, kafka, save_result, student_name
from lo_stream.envelopes import Identity
from lo_stream.settings import Settings
from tests.support import ServiceProcess, free_port, read_table, read_topic

__all__ = ["HOSTILE", "soak"]

EVENT_COUNT = "lo_stream.writing.event_count-v1"


def _deep(levels: int) -> object:
    value: object = 0
    for _ in range(levels):
        value = [value]
    return value


# What a careless or malicious client sends, with the reason the gateway must answer.
HOSTILE: list[tuple[str, bytes]] = [
    ("invalid_json", b"{not json"),
    ("not_an_object", b"[1, 2, 3]"),
    ("missing_field", b'{"timestamp": 5}'),
    ("wrong_type", orjson.dumps({"event": "keystroke", "timestamp": "yesterday"})),
    ("too_deep", orjson.dumps({"event": "keystroke", "deep": _deep(100)})),
    ("too_large", orjson.dumps({"event": "keystroke", "pad": "x" * (300 * 1024)})),
    ("wrong_type", orjson.dumps({"event": "lock_fields", "fields": {"event": []}})),
    ("too_large", orjson.dumps({"event": "lock_fields", "fields": {"pad": "y" * (200 * 1024), "pad2": "z" * (100 * 1024)}})),
]


class SoakClient:
    """One student's websocket: which frames were good, which hostile, and what came back."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, student: str) -> None:
        self.ws, self.student = ws, student
        self.seq, self.acked = 1, 1  # frame 1 was the identity
        self.good: list[int] = []
        self.hostile: dict[int, str] = {}  # seq -> the reason expected
        self.errors: dict[int, str] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, base: str, student: str) -> "SoakClient":
        ws = await http.ws_connect(f"{base}/wsapi/in/", max_msg_size=0)
        await ws.send_bytes(orjson.dumps({"event": "test_framework_fake_identity", "source": SOURCE, "user_id": student}))
        return cls(ws, student)

    async def send(self, frame: bytes, expected_error: str | None) -> None:
        await self.ws.send_bytes(frame)
        self.seq += 1
        if expected_error:
            self.hostile[self.seq] = expected_error
        else:
            self.good.append(self.seq)

    async def wait_acked(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.acked < self.seq:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.student}: frames up to {self.seq} sent, {self.acked} acknowledged")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        async for message in self.ws:
            reply = orjson.loads(message.data)
            if reply.get("status") == "ack":
                self.acked = reply["seq"]
            elif reply.get("status") == "error":
                self.errors[reply["seq"]] = reply["reason"]


async def soak(settings: Settings, seconds: float, rate: float, students: int, hostile_share: float,
               log_dir: Path) -> dict:
    worker = ServiceProcess(settings, log_dir / "soak-worker.log").start()
    gateway, base = await start_gateway(settings, log_dir)
    samplers = {"gateway": ProcessTreeSampler(gateway.process.pid), "worker": ProcessTreeSampler(worker.process.pid)}
    rss: dict[str, list[tuple[float, float]]] = {name: [] for name in samplers}
    try:
        await worker.wait_until_serving(f"http://{settings.bind_host}:{settings.worker_port}/healthz")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            clients = [await SoakClient.connect(http, base, student_name(i)) for i in range(students)]
            started = time.monotonic()
            total, every = int(rate * seconds), max(1, round(1 / hostile_share))

            async def sample() -> None:
                while time.monotonic() - started < seconds:
                    for name, sampler in samplers.items():
                        sampler.sample()
                        rss[name].append((time.monotonic() - started, sampler.last_rss / 2**20))
                    await asyncio.sleep(2)

            sampling = asyncio.create_task(sample())
            for i in range(total):
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
                client = clients[i % students]
                if i % every == every - 1:
                    reason, frame = HOSTILE[(i // every) % len(HOSTILE)]
                    await client.send(frame, reason)
                else:
                    await client.send(orjson.dumps(keystroke(client.student)), None)
            sent_seconds = time.monotonic() - started
            await sampling
            for client in clients:
                await client.wait_acked(timeout=120)
            expected = {Identity.test_case(client.student).safe_user_id: len(client.good) for client in clients}
            counted = await _counted(settings, expected, worker)
            for client in clients:
                await client.close()
    finally:
        gateway.stop()
        worker.stop()
    wrong_answers = {f"{c.student}#{seq}": (c.errors.get(seq), reason)
                     for c in clients for seq, reason in c.hostile.items() if c.errors.get(seq) != reason}
    unexpected_errors = {f"{c.student}#{seq}": reason for c in clients for seq, reason in c.errors.items()
                         if seq not in c.hostile}
    letters = [value for _, value in await read_topic(settings, settings.topics.dead_letters, latest_per_key=False)]
    return {
        "seconds": seconds,
        "sent_seconds": round(sent_seconds, 1),
        "rate_events_per_s": rate,
        "students": students,
        "good_events": sum(expected.values()),
        "hostile_frames": sum(len(c.hostile) for c in clients),
        "hostile_answered_as_expected": sum(len(c.hostile) for c in clients) - len(wrong_answers),
        "wrong_answers": dict(list(wrong_answers.items())[:10]),
        "good_events_refused": dict(list(unexpected_errors.items())[:10]),
        "gateway_dead_letters": sum(1 for letter in letters if letter.get("stage") == "gateway"),
        "students_counted_exactly": sum(1 for s, n in expected.items() if counted.get(s) == n),
        "miscounted": {s: (counted.get(s), n) for s, n in expected.items() if counted.get(s) != n},
        "rss_mb": {name: _flatness(points) for name, points in rss.items()},
    }


async def _counted(settings: Settings, expected: dict[str, int], worker: ServiceProcess, timeout: float = 180) -> dict:
    """The event counts of the worker's table once they match `expected`, or as they are at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        table = await read_table(settings, EVENT_COUNT)
        counted = {student: value["state"]["count"] for student, value in table.items()}
        if all(counted.get(s) == n for s, n in expected.items()) or time.monotonic() > deadline:
            return counted
        if worker.process.poll() is not None:
            raise RuntimeError(f"the worker exited: {worker.log_tail()}")
        await asyncio.sleep(1)


def _flatness(points: list[tuple[float, float]]) -> dict:
    """RSS after start-up and at the end: medians of the second and the last minute (of the second
    and the last tenth in runs under 10 minutes), the peak, and the series every 30 s."""
    if not points:
        return {}
    span = min(60.0, points[-1][0] / 10 or 1.0)
    second = [mb for t, mb in points if span <= t <= 2 * span] or [points[0][1]]
    last = [mb for t, mb in points if t >= points[-1][0] - span]
    start, end = statistics.median(second), statistics.median(last)
    series = {f"{t:.0f}": round(mb, 1) for t, mb in points if int(t) % 30 < 2}
    return {"start": round(start, 1), "end": round(end, 1), "peak": round(max(mb for _, mb in points), 1),
            "end_over_start": round(end / start, 2), "flat": end <= 1.1 * start, "every_30_s": series}


def run(seconds: float, rate: float, students: int, hostile_share: float, table_memory_mb: int = 4) -> dict:
    """Soak on a broker of its own (or LO_STREAM_BROKER); save and return the result."""
    work = Path(tempfile.mkdtemp(prefix="lo-bench-"))
    with kafka(work) as broker:
        settings = bench_settings(broker, work, "soak", gateway_port=free_port(), gateway_insecure_identity=True,
                                  modules="writing", table_memory_mb=table_memory_mb)
        result = {"benchmark": "soak", **environment(broker), "table_memory_mb": table_memory_mb,
                  **asyncio.run(soak(settings, seconds, rate, students, hostile_share, work))}
    save_result(f"soak-{seconds:g}s", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--rate", type=float, default=200, help="frames per second, all students together")
    parser.add_argument("--students", type=int, default=50)
    parser.add_argument("--hostile", type=float, default=0.01, help="share of hostile frames")
    parser.add_argument("--table-memory-mb", type=int, default=4, help="the worker's RocksDB budget per store")
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    result = run(args.seconds, args.rate, args.students, args.hostile, args.table_memory_mb)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
