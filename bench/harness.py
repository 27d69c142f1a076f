"""What every benchmark shares: the broker, the workload, running a competitor, and the results.

Responsibilities:

1. a real Kafka broker: ``LO_STREAM_BROKER`` when set, else the embedded one on free ports
   (stopped afterwards);
2. the workload: keystroke and save events in lo_stream's envelope format for S students,
   produced once into a topic, one envelope per message or packed (a JSON list of one
   student's envelopes, as `lo_stream.connectors.producer.pack` makes), and copied byte for byte
   (same partitions) when a competitor needs its own topic name;
3. draining: start a competitor process, follow its consumer group's committed offsets until
   they reach the end of the topic, sample its memory and CPU, stop it;
4. a websocket client of the ingest gateway (one student per connection);
5. results: figures with the date, machine and versions, saved to ``bench/results/``; percentiles
   and ratios.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
import uuid
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterator, Sequence

import aiohttp
import numpy as np
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from lo_stream.connectors.local_kafka import LocalKafka
from lo_stream.connectors.producer import MAX_MESSAGE_BYTES
from lo_stream.replay import Deployment
from lo_stream.settings import Settings, load_settings
from tests.support import ServiceProcess, free_port, free_port_pair

__all__ = [
    "COMMIT_INTERVAL_S",
    "RESULTS",
    "Dataset",
    "Drained",
    "GatewayClient",
    "ProcessTreeSampler",
    "SOURCE",
    "bench_settings",
    "copy_topic",
    "drain",
    "environment",
    "envelope_of",
    "kafka",
    "percentiles",
    "produce_dataset",
    "ratio",
    "save_result",
    "student_name",
    "worker_env",
]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# Every competitor commits its consumer offsets this often (lo_stream's commit_interval, Quix's
# commit_interval, Kafka Streams' commit.interval.ms, the raw loop's own timer): the drain is
# timed on those commits.
COMMIT_INTERVAL_S = 1.0
POLL_S = 0.2
PACKAGES = ("lo_stream", "aiokafka", "rocksdict", "orjson", "quixstreams", "confluent-kafka")
# Coprime with every S we use (powers of 10): message m goes to student (m * STRIDE) % S, so each
# student gets the same number of messages, scattered over the topic.
STRIDE = 7919
SOURCE = "org.mitros.writing_analytics"
EPOCH_MS = 1_795_548_204_000


@contextlib.contextmanager
def kafka(work: Path) -> Iterator[str]:
    """Bootstrap servers of a real broker: LO_STREAM_BROKER, or an embedded one (free ports) for the block."""
    configured = os.environ.get("LO_STREAM_BROKER")
    if configured:
        yield load_settings().broker
        return
    broker = LocalKafka(load_settings(kafka_port=free_port_pair(), data_dir=work / "kafka"))
    status = broker.start()
    try:
        yield status.bootstrap
    finally:
        broker.stop()
        broker.delete_data()  # the topics' data: GBs after a full run


def bench_settings(broker: str, work: Path, name: str, **overrides: object) -> Settings:
    """Settings of one competitor run: its own topic prefix (so consumer group), data dir and port."""
    prefix = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    return load_settings(
        broker=broker, topic_prefix=prefix, data_dir=work / prefix, worker_port=free_port(), **overrides
    )


# -- results ---------------------------------------------------------------------------------


def environment(broker: str) -> dict:
    """Date, machine and versions, for every result file."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    versions = {"python": platform.python_version(), "kafka": load_settings().kafka_version}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
        },
        "broker": "external (LO_STREAM_BROKER)" if os.environ.get("LO_STREAM_BROKER") else f"embedded {broker}",
        "versions": versions,
    }


def save_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    return path


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of `values`, rounded to 0.1.

    >>> percentiles([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    {'p50': 5.5, 'p90': 9.1, 'p99': 9.9, 'max': 10.0}
    """
    if not len(values):
        raise ValueError("no values to take percentiles of: nothing was measured")
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": round(float(p50), 1), "p90": round(float(p90), 1), "p99": round(float(p99), 1),
            "max": round(float(max(values)), 1)}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator to 2 decimals; None when either is missing or the denominator is 0.

    >>> ratio(3, 4), ratio(1, 0), ratio(None, 2)
    (0.75, None, None)
    """
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 2)


# -- the workload ----------------------------------------------------------------------------


def student_name(index: int) -> str:
    """The id of student number `index` (its user id and safe_user_id)."""
    return f"student-{index:07d}"


def envelope_of(student: str, event_index: int) -> dict:
    """Event number `event_index` of the workload as the gateway would store it: a keystroke, or
    every 10th a Google Docs save inserting a word; timestamps grow by 37 ms per event."""
    timestamp = EPOCH_MS + 37 * event_index
    client: dict = {"event": "keystroke", "source": SOURCE, "timestamp": timestamp, "doc_id": f"doc-{student[-1]}",
                    "keystroke": {"key": "e", "keyCode": 69, "type": "keydown"}}
    if event_index % 10 == 9:
        client = {"event": "google_docs_save", "source": SOURCE, "timestamp": timestamp, "doc_id": client["doc_id"],
                  "bundles": [{"commands": [{"ty": "is", "ibi": 1, "s": "word "}]}]}
    return {
        "client": client,
        "server": {"time": timestamp / 1000},
        "metadata": {"auth": {"user_id": student, "safe_user_id": student, "providence": "bench"}},
    }


def workload_messages(students: int, events: int, per_message: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of each message: `events` envelopes for `students` students, `per_message`
    envelopes of one student in each (a lone envelope when 1, else a JSON list)."""
    if events % per_message:
        raise ValueError(f"events ({events}) must be a multiple of events per message ({per_message})")
    for message in range(events // per_message):
        student = student_name(message * STRIDE % students)
        envelopes = [envelope_of(student, message * per_message + i) for i in range(per_message)]
        value = envelopes[0] if per_message == 1 else envelopes
        yield student.encode(), orjson.dumps(value)


@dataclass(frozen=True)
class Dataset:
    """A pre-produced topic of the workload."""

    topic: str
    students: int
    events: int
    per_message: int
    partitions: int

    @property
    def messages(self) -> int:
        return self.events // self.per_message

    @property
    def label(self) -> str:
        return "packed" if self.per_message > 1 else "single"


async def produce_dataset(broker: str, students: int, events: int, per_message: int, partitions: int) -> Dataset:
    """Create a topic and fill it with the workload (keyed by student, Kafka's default partitioner,
    as lo_stream's producer does)."""
    dataset = Dataset(f"bench-data-{students}-{events}-{per_message}-{uuid.uuid4().hex[:6]}",
                      students, events, per_message, partitions)
    await create_topic(broker, dataset.topic, partitions)
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks=1, linger_ms=20, max_batch_size=512 * 1024,
                                max_request_size=2 * MAX_MESSAGE_BYTES)
    await producer.start()
    try:
        pending = []
        for key, value in workload_messages(students, events, per_message):
            pending.append(await producer.send(dataset.topic, key=key, value=value))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return dataset


async def delete_topics(broker: str, fragment: str) -> None:
    """Delete every topic whose name holds `fragment` (a dataset's name, or a competitor run's unique
    prefix, which its consumer group and the internal topics of every engine carry): a bench run
    leaves nothing behind on a broker of the user's (LO_STREAM_BROKER)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if fragment in name]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def create_topic(broker: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def copy_topic(broker: str, dataset: Dataset, target: str) -> int:
    """Copy every message of a dataset's topic into the existing topic `target`, partition for
    partition; return how many."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, max_partition_fetch_bytes=4 << 20)
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks=1, linger_ms=20, max_batch_size=512 * 1024,
                                max_request_size=2 * MAX_MESSAGE_BYTES)
    await consumer.start()
    await producer.start()
    copied = 0
    try:
        partitions = [TopicPartition(dataset.topic, p) for p in range(dataset.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        while any([await consumer.position(tp) < end[tp] for tp in partitions]):
            pending = []
            for tp, records in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).items():
                for record in records:
                    pending.append(await producer.send(target, key=record.key, value=record.value, partition=tp.partition))
            await asyncio.gather(*pending)
            copied += len(pending)
    finally:
        await producer.stop()
        await consumer.stop()
    return copied


# -- running a competitor --------------------------------------------------------------------


def worker_env(work: Path) -> dict[str, str]:
    """Environment of a `lo-stream worker` that can run the workshop module (`bench.workshop`;
    choose modules with the `modules` setting) and commits every COMMIT_INTERVAL_S.

    The workshop module is made visible to this process only, as an installed distribution
    would be (a ``.dist-info`` with its entry point on PYTHONPATH), rather than installed into
    the venv, where every test worker would run it too."""
    path = work / "bench-modules"
    dist_info = path / "lo_bench_workshop-0.0.0.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: lo-bench-workshop\nVersion: 0.0.0\n")
    (dist_info / "entry_points.txt").write_text("[lo_stream.modules]\nworkshop = bench.workshop\n")
    return {"PYTHONPATH": os.pathsep.join([str(path), str(REPO)]), "LO_STREAM_COMMIT_INTERVAL": str(COMMIT_INTERVAL_S)}


class ProcessTreeSampler:
    """Peak and last resident memory (sampled, process and children) and CPU time of a process tree."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak_rss = 0
        self.last_rss = 0
        self.cpu: dict[int, float] = {}

    def sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            tree = [self.root, *self.root.children(recursive=True)]
            rss = 0
            for process in tree:
                with contextlib.suppress(psutil.Error):
                    rss += process.memory_info().rss
                    times = process.cpu_times()
                    self.cpu[process.pid] = times.user + times.system
            self.last_rss = rss
            self.peak_rss = max(self.peak_rss, rss)

    @property
    def cpu_seconds(self) -> float:
        """User + system CPU time of every process of the tree seen so far."""
        return sum(self.cpu.values())

    def high_water_mark(self) -> int | None:
        """VmHWM of the root process (its own peak RSS as the kernel counts it), in bytes."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.root.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None


@dataclass
class Drained:
    """How a competitor drained a topic."""

    events_per_s: float  # in steady state, between offset commits (see steady_rate)
    seconds: float  # from process start to the final commit
    seconds_to_first_commit: float  # start-up, and the first commit interval
    peak_rss_mb: float  # sampled, the whole process tree
    vm_hwm_mb: float | None  # the kernel's peak RSS of the main process
    cpu_s: float  # the whole run, start-up included
    events_per_cpu_s: float  # in the same window

    def as_dict(self) -> dict:
        return {name: round(value, 1) if isinstance(value, float) else value for name, value in vars(self).items()}


def steady_rate(commits: list[tuple[float, int, float]], total: int, started: float) -> tuple[float, int, float]:
    """Messages/s from (time, messages committed, CPU seconds) of each new commit seen.

    Timed between the first commit and the last one seen while messages were still left: both
    are snapshots of work in progress, unlike the final commit, which comes up to a commit
    interval after the work. With less than a second between those, timed from the first commit
    to the final one, or (everything in one commit) from `started`. Also returns the messages
    and CPU seconds of that window.

    >>> steady_rate([(2.0, 100, 1.0), (3.0, 300, 2.0), (4.0, 500, 3.0), (5.5, 600, 4.0)], 600, 0.0)
    (200.0, 400, 2.0)
    """
    first = commits[0]
    in_progress = [commit for commit in commits if commit[1] < total] or [first]
    if in_progress[-1][0] - first[0] >= 1.0:
        last = in_progress[-1]
    elif commits[-1][0] > first[0]:
        last = commits[-1]
    else:
        return total / (first[0] - started), total, first[2]
    return (last[1] - first[1]) / (last[0] - first[0]), last[1] - first[1], last[2] - first[2]


async def drain(process: ServiceProcess, group: str, topic: str, dataset: Dataset, stall_timeout: float = 120) -> Drained:
    """Start `process`, wait until consumer group `group` has committed every message of `topic`,
    stop it, and say how fast it went. Fails with the process's log if it exits or stalls."""
    async with Deployment(process.settings) as kafka:
        started = time.monotonic()
        process.start()
        sampler = ProcessTreeSampler(process.process.pid)
        commits: list[tuple[float, int, float]] = []  # when a new commit was seen, messages, CPU seconds
        progress = (started, 0)
        try:
            while True:
                await asyncio.sleep(POLL_S)
                sampler.sample()
                now = time.monotonic()
                if process.process.poll() is not None:
                    raise RuntimeError(f"{process.command} exited with {process.process.returncode}; log:\n{process.log_tail()}")
                done = sum((await kafka.committed(group, topic)).values())
                if done > progress[1]:
                    progress = (now, done)
                elif now - progress[0] > stall_timeout:
                    raise RuntimeError(
                        f"{process.command}: committed offsets of group {group!r} stuck at {done} of {dataset.messages} "
                        f"messages for {stall_timeout:.0f}s; log:\n{process.log_tail()}"
                    )
                if done and (not commits or done > commits[-1][1]):
                    commits.append((now, done, sampler.cpu_seconds))
                if done >= dataset.messages:
                    break
            high_water_mark = sampler.high_water_mark()
        finally:
            if process.process.poll() is None:
                process.stop(timeout=90)
    rate, messages, cpu = steady_rate(commits, dataset.messages, started)
    return Drained(
        events_per_s=rate * dataset.per_message,
        seconds=now - started,
        seconds_to_first_commit=commits[0][0] - started,
        peak_rss_mb=sampler.peak_rss / 2**20,
        vm_hwm_mb=high_water_mark / 2**20 if high_water_mark else None,
        cpu_s=sampler.cpu_seconds,
        events_per_cpu_s=messages * dataset.per_message / cpu if cpu else 0.0,
    )


# -- the gateway -------------------------------------------------------------------------------


class GatewayClient:
    """One student's websocket to the ingest gateway: LO's ``/wsapi/in/`` protocol with the
    development-only identity event (the gateway must run with ``gateway_insecure_identity``).

    `acked` counts the data frames the gateway has acknowledged (stored in Kafka)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, student: str) -> None:
        self.ws = ws
        self.student = student
        self.sent = 0
        self.acked = 0
        self._ack = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, base: str, student: str) -> "GatewayClient":
        ws = await http.ws_connect(f"{base}/wsapi/in/")
        await ws.send_bytes(orjson.dumps({"event": "test_framework_fake_identity", "source": SOURCE, "user_id": student}))
        reply = orjson.loads((await ws.receive(timeout=30)).data)
        if reply.get("status") != "auth":
            raise RuntimeError(f"the gateway at {base} did not accept the identity of {student!r}: {reply} "
                               "(is LO_STREAM_GATEWAY_INSECURE_IDENTITY on?)")
        return cls(ws, student)

    async def send(self, event: dict, window: int | None = None) -> None:
        """Send one event; with `window`, first wait until fewer than that many are unacknowledged."""
        while window is not None and self.sent - self.acked >= window:
            self._ack.clear()
            await self._ack.wait()
        await self.ws.send_bytes(orjson.dumps(event))
        self.sent += 1

    async def wait_acked(self, timeout: float) -> None:
        async def every_ack() -> None:
            while self.acked < self.sent:
                self._ack.clear()
                await self._ack.wait()

        await asyncio.wait_for(every_ack(), timeout)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        async for message in self.ws:
            reply = orjson.loads(message.data)
            if reply.get("status") == "ack":
                self.acked = reply["seq"] - 1  # the identity event was frame 1
                self._ack.set()
            elif reply.get("status") == "error":
                raise RuntimeError(f"the gateway refused an event of {self.student!r}: {reply}")
