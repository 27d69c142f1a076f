"""Helpers shared by the tests: free ports, a worker process, producing and reading topics."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import UnknownTopicOrPartitionError

from lo_stream.settings import Settings


def free_port_pair() -> int:
    """A port p such that p and p + 1 are both free on 127.0.0.1 (broker + controller)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 65535 and port_is_free(port + 1):
            return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lo_stream_command(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m lo_stream ARGS`` and return what it printed and its exit code. Past `timeout`
    the command and what it started (a replay's worker) are killed, and the test fails with the end
    of what it printed."""
    with subprocess.Popen([sys.executable, "-m", "lo_stream", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            raise AssertionError(f"lo-stream {' '.join(args)} did not finish within {timeout:g}s; it printed:\n"
                                 f"{stdout[-2000:]}\n{stderr[-6000:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


class ServiceProcess:
    """A lo_stream server in a child process (by default ``lo-stream worker``; also the gateway),
    configured by `settings`, logging to a file."""

    LO_STREAM = ("-m", "lo_stream", "worker", "-l", "info")
    GATEWAY = ("-m", "lo_stream", "gateway")

    def __init__(
        self, settings: Settings, log_file: Path, command: tuple[str, ...] = LO_STREAM, env: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.log_file = log_file
        self.command = command
        self.env = env or {}  # more variables for the child, beside the settings
        self.process: subprocess.Popen | None = None

    def start(self) -> "ServiceProcess":
        env = {**os.environ, **self.settings.as_env(), **self.env}
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *self.command],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
        return self

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a deployment would; return the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"worker did not stop within {timeout}s; log:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to flush anything."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    async def wait_until_serving(self, url: str, timeout: float = 60) -> None:
        """Poll `url` until it answers 200; fail with the log if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    break
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"{url} did not answer within {timeout}s; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


async def produce(settings: Settings, events: Iterable[tuple[str, dict | list | bytes]]) -> list[tuple[str, int]]:
    """Produce (student key, envelope / list of envelopes / raw bytes) to the events topic, wait for
    the broker's acks, and return (student key, offset) of each message in order."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        keys, sends = [], []
        for key, event in events:
            keys.append(key)
            value = event if isinstance(event, bytes) else orjson.dumps(event)
            sends.append(await producer.send(settings.topics.events, key=key.encode(), value=value))
        acks = await asyncio.gather(*sends)
        return [(key, ack.offset) for key, ack in zip(keys, acks)]
    finally:
        await producer.stop()


async def read_table(settings: Settings, table: str) -> dict:
    """The latest value of every key in a table, read from its changelog topic."""
    return await read_topic(settings, f"{settings.app_id}-{table}-changelog")


async def read_topic(settings: Settings, topic: str, *, latest_per_key: bool = True) -> Any:
    """Every record of a topic, as {key: latest value} or as a list of (key, value); JSON-decoded, a
    tombstone as None."""
    # No group: the consumer takes every partition of the topic.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    try:
        await consumer.start()
        assigned = sorted(consumer.assignment())
        if not assigned:
            return {} if latest_per_key else []
        end = await consumer.end_offsets(assigned)
        records = []
        while [tp for tp in assigned if await consumer.position(tp) < end[tp]]:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                records.extend((message.key, _json_or_none(message.value)) for message in messages)
        if latest_per_key:  # a tombstone (None) deletes its key
            latest = {orjson.loads(key): value for key, value in records}
            return {key: value for key, value in latest.items() if value is not None}
        return records
    except UnknownTopicOrPartitionError:
        return {} if latest_per_key else []  # not created yet
    finally:
        await consumer.stop()


def _json_or_none(value: bytes | None) -> Any:
    return None if value is None else orjson.loads(value)


def state_and_offset(value: dict) -> dict:
    return {"state": value["state"], "offset": value["offset"]}


def state_only(value: dict) -> Any:
    return value["state"]


async def wait_for_table(
    settings: Settings, table: str, expected: dict, worker: ServiceProcess, timeout: float = 120,
    *, project=state_and_offset, keys: set | None = None,
) -> dict:
    """Poll a table's changelog until its values, passed through `project`, equal `expected`
    (only its `keys`, when given); fail with the difference and the worker log."""
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = {
            key: project(value) for key, value in (await read_table(settings, table)).items()
            if keys is None or key in keys
        }
        if state == expected:
            return state
        if worker.process is not None and worker.process.poll() is not None:
            break
        await asyncio.sleep(1)
    wrong = {k: (state.get(k), v) for k, v in expected.items() if state.get(k) != v}
    extra = sorted(set(state) - set(expected))
    raise AssertionError(
        f"table {table} is not as expected after {timeout}s: (found, expected) {dict(list(wrong.items())[:10])}, "
        f"unexpected keys {extra[:10]}\nworker log:\n{worker.log_tail()}"
    )


def envelope(student: str, **client) -> dict:
    """An event as the gateway wraps it."""
    return {
        "client": client,
        "server": {"time": 1795548204.0},
        "metadata": {"auth": {"user_id": student, "safe_user_id": student, "providence": "test"}},
    }


def expected_counts(produced: Iterable[tuple[str, int]]) -> dict[str, dict]:
    """What the event_count table must hold: per student, the count and the offset of the last event."""
    table: dict[str, dict] = {}
    for key, offset in produced:
        entry = table.setdefault(key, {"state": {"count": 0}, "offset": -1})
        entry["state"]["count"] += 1
        entry["offset"] = max(entry["offset"], offset)
    return table


def assigned_partitions(worker: ServiceProcess, settings: Settings) -> str:
    """The events-topic partitions `worker` last reported holding (e.g. '0-1'), or ''."""
    found = re.findall(rf"assigned partitions (\S+) of {re.escape(settings.topics.events)} ", worker.log_file.read_text())
    return found[-1] if found and found[-1] != "none" else ""


LO_DOC = "1RkWp-lo-essay"
LO_DOC_URL = f"https://docs.google.com/document/d/{LO_DOC}/edit"


def lo_writing_session(clock: int, source: str = "org.mitros.writing_analytics") -> list[dict]:
    """A student's events as Learning Observer's Google Docs extension sends them (before the
    gateway wraps them), in the shapes LO's writing reducers read: the document as ``object``
    (title, URL; keystrokes carry no ``doc_id``), a ``document_history`` when it is opened, saves
    in a document that had 119 characters before logging began, a tab added, written in and
    renamed, a delete undone by ``rvrt``, and the Chrome sign-in. `LO_SESSION` says what they give.
    """
    thing = {"type": "http://schema.learning-observer.org/writing-observer/", "id": LO_DOC,
             "title": "Unit 3 essay #essay #unit3", "url": LO_DOC_URL}

    def save(*commands: dict, **fields: Any) -> dict:
        return {"event": "google_docs_save", "doc_id": LO_DOC, "bundles": [{"commands": list(commands)}], **fields}

    events = [
        {"event": "document_history", "doc_id": LO_DOC, "history": {"changelog": []}},
        {"event": "keystroke", "keystroke": {"key": "S"}, "chrome_identity": {"email": "alberta@school.org"}},
        save({"ty": "is", "ibi": 120, "s": "Second paragraph."}),  # 119 characters were there already
        save({"ty": "is", "ibi": 1, "s": "Title: "}),  # before them: "Second..." moves to 127
        save({"ty": "ds", "si": 127, "ei": 133}),  # "Second " deleted ...
        save({"ty": "rvrt", "snapshot": [{"ty": "is", "ibi": 127, "s": "Second ", "sl": 0}]}),  # ... and undone
        save({"ty": "mlti", "mts": [
            {"ty": "ac", "d": ["t.notes", [0, "Notes"]]},
            {"ty": "nm", "nmc": {"ty": "is", "ibi": 1, "s": "remember sources"}, "nmr": ["x", "t.notes"]},
        ]}),
        save({"ty": "ucp", "d": ["t.notes", [0, [0, "Research notes"]]]}, tab_id="t.notes"),
        {"event": "keystroke", "keystroke": {"key": "r"}, "url": f"{LO_DOC_URL}?tab=t.notes"},
        {"event": "keystroke", "keystroke": {"key": "e"}, "tab_id": "t.notes"},
        {"event": "visibility", "visibility": "hidden"},
    ]
    for step, event in enumerate(events):
        event.update(source=source, timestamp=clock + 1000 * step, object=dict(thing))
    return events


LO_SESSION = {
    "text": "Title: Second paragraph.",
    "unseen": 119,
    "tab_text": {"t.notes": "remember sources"},
    "words": 5,
    "title": "Unit 3 essay #essay #unit3",
    "tabs": {"t.notes": "Research notes"},
    "tags": {"essay": [LO_DOC], "unit3": [LO_DOC]},
    "email": "alberta@school.org",
}
"""What `lo_writing_session` gives in lo_stream.writing's tables (worked out by hand from LO's rules)."""
