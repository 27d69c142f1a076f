"""`lo-stream kafka start|status|stop`: a real single-node broker from Kafka's jars, and clear errors."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from lo_stream.connectors.local_kafka import LocalKafka, find_java
from lo_stream.settings import load_settings
from lo_stream.topics import ensure_topics
from tests.support import free_port_pair, lo_stream_command, port_is_free

pytestmark = pytest.mark.kafka

SHARED_CACHE = load_settings().cache_dir  # jars fetched once for the whole suite


def broker_env(tmp_path: Path, *, cache: Path = SHARED_CACHE, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LO_STREAM_")}
    env.update(LO_STREAM_DATA_DIR=str(tmp_path / "data"), LO_STREAM_CACHE_DIR=str(cache), **extra)
    return env


def path_with(tmp_path: Path, **programs: str) -> str:
    """A PATH holding only the given programs (name -> target path, or a script body starting with #!)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, target in programs.items():
        if target.startswith("#!"):
            (bin_dir / name).write_text(target)
            (bin_dir / name).chmod(stat.S_IRWXU)
        else:
            (bin_dir / name).symlink_to(target)
    return str(bin_dir)


async def round_trip(bootstrap: str) -> bytes:
    """Create lo_stream's topics on the broker, produce one event and read it back."""
    settings = load_settings(broker=bootstrap, topic_prefix="roundtrip")
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    await producer.send_and_wait(settings.topics.events, b'{"event": "ping"}', key=b"s1")
    await producer.stop()
    consumer = AIOKafkaConsumer(settings.topics.events, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    return message.value


def test_start_status_stop_twice_and_the_second_start_needs_no_download(tmp_path):
    port = free_port_pair()
    env = broker_env(tmp_path, cache=tmp_path / "cache")
    try:
        first = lo_stream_command("kafka", "start", "--port", str(port), env=env)
        assert first.returncode == 0, first.stderr
        assert "fetching Apache Kafka" in first.stdout
        assert f"bootstrap: 127.0.0.1:{port}" in first.stdout
        assert asyncio.run(round_trip(f"127.0.0.1:{port}")) == b'{"event": "ping"}'

        status = lo_stream_command("kafka", "status", "--port", str(port), env=env)
        assert status.returncode == 0 and "is running" in status.stdout
        assert str(tmp_path / "data" / "kafka" / "kafka.log") in status.stdout

        stop = lo_stream_command("kafka", "stop", "--port", str(port), env=env)
        assert stop.returncode == 0 and "stopped Kafka" in stop.stdout
        status = lo_stream_command("kafka", "status", "--port", str(port), env=env)
        assert status.returncode == 3 and "not running" in status.stdout
        assert port_is_free(port) and port_is_free(port + 1)

        # Again, with no Maven reachable: the jars must come from the cache.
        env["PATH"] = path_with(tmp_path, java=shutil.which("java"))
        second = lo_stream_command("kafka", "start", "--port", str(port), env=env)
        assert second.returncode == 0, second.stderr
        assert "fetching" not in second.stdout
        # The topics and the event of the first run are still there.
        assert asyncio.run(round_trip(f"127.0.0.1:{port}")) == b'{"event": "ping"}'
        assert lo_stream_command("kafka", "status", "--port", str(port), env=env).returncode == 0
        stop = lo_stream_command("kafka", "stop", "--port", str(port), env=env)
        assert stop.returncode == 0 and "stopped Kafka" in stop.stdout
        assert lo_stream_command("kafka", "status", "--port", str(port), env=env).returncode == 3
    finally:
        lo_stream_command("kafka", "stop", "--port", str(port), env=broker_env(tmp_path))


def test_start_when_already_running_reports_it(tmp_path):
    port = free_port_pair()
    env = broker_env(tmp_path)
    try:
        assert lo_stream_command("kafka", "start", "--port", str(port), env=env).returncode == 0
        again = lo_stream_command("kafka", "start", "--port", str(port), env=env)
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        assert "stopped Kafka" in lo_stream_command("kafka", "stop", "--port", str(port), env=env).stdout
    assert "was not running" in lo_stream_command("kafka", "stop", "--port", str(port), env=env).stdout


def test_a_stopped_brokers_data_is_deleted_and_the_next_start_is_empty(tmp_path):
    broker = LocalKafka(load_settings(kafka_port=free_port_pair(), data_dir=tmp_path / "data", cache_dir=SHARED_CACHE))
    try:
        bootstrap = broker.start().bootstrap
        assert asyncio.run(round_trip(bootstrap)) == b'{"event": "ping"}'
        with pytest.raises(RuntimeError, match="stop the broker of .* before deleting its data"):
            broker.delete_data()
        broker.stop()
        broker.delete_data()
        assert broker.log_file.exists()  # the broker's own log stays
        broker.start()
        assert "roundtrip.events" not in asyncio.run(topics(bootstrap))
    finally:
        broker.stop()


async def topics(bootstrap: str) -> set[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return await consumer.topics()
    finally:
        await consumer.stop()


def test_no_java_says_what_to_install(tmp_path):
    env = broker_env(tmp_path, PATH=path_with(tmp_path))
    env.pop("JAVA_HOME", None)
    result = lo_stream_command("kafka", "start", "--port", str(free_port_pair()), env=env)
    assert result.returncode == 1
    assert "Java 17+ is needed" in result.stderr
    assert "openjdk-17" in result.stderr and "docker compose" in result.stderr


def test_old_java_is_refused(tmp_path):
    fake_java = '#!/bin/sh\necho \'openjdk version "11.0.22" 2024-01-16\' >&2\n'
    env = broker_env(tmp_path, PATH=path_with(tmp_path, java=fake_java))
    env.pop("JAVA_HOME", None)
    result = lo_stream_command("kafka", "start", "--port", str(free_port_pair()), env=env)
    assert result.returncode == 1
    assert "is Java 11; Kafka needs Java 17 or newer" in result.stderr


def test_no_maven_says_what_to_install(tmp_path):
    env = broker_env(tmp_path, cache=tmp_path / "empty-cache", PATH=path_with(tmp_path, java=shutil.which("java")))
    result = lo_stream_command("kafka", "start", "--port", str(free_port_pair()), env=env)
    assert result.returncode == 1
    assert "Maven (mvn) is not on PATH" in result.stderr
    assert "apt-get install maven" in result.stderr


def test_download_failure_names_the_version_and_what_to_check(tmp_path):
    env = broker_env(tmp_path, cache=tmp_path / "empty-cache", LO_STREAM_KAFKA_VERSION="0.0.0")
    result = lo_stream_command("kafka", "start", "--port", str(free_port_pair()), env=env)
    assert result.returncode == 1
    assert "could not fetch Apache Kafka 0.0.0 from Maven Central" in result.stderr
    assert "LO_STREAM_KAFKA_VERSION" in result.stderr and "Maven said:" in result.stderr
    assert not (tmp_path / "empty-cache" / "kafka-0.0.0" / "libs").exists()  # nothing half-fetched is kept


def test_port_in_use_is_named(tmp_path):
    port = free_port_pair()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = lo_stream_command("kafka", "start", "--port", str(port), env=broker_env(tmp_path))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "--port N" in result.stderr


def test_broker_that_does_not_answer_in_time_is_stopped_and_its_log_shown(tmp_path):
    port = free_port_pair()
    env = broker_env(tmp_path, LO_STREAM_KAFKA_START_TIMEOUT="0.3")
    result = lo_stream_command("kafka", "start", "--port", str(port), env=env)
    assert result.returncode == 1
    assert f"did not answer at 127.0.0.1:{port} within" in result.stderr
    assert "LO_STREAM_KAFKA_START_TIMEOUT" in result.stderr
    assert "Last lines of" in result.stderr
    assert lo_stream_command("kafka", "status", "--port", str(port), env=env).returncode == 3
    assert port_is_free(port)


def test_broker_that_exits_while_starting_shows_why(tmp_path):
    port = free_port_pair()
    damaged = tmp_path / "data" / "kafka" / "logs"
    damaged.mkdir(parents=True)
    (damaged / "meta.properties").write_text("not a kafka storage directory\n")
    result = lo_stream_command("kafka", "start", "--port", str(port), env=broker_env(tmp_path))
    assert result.returncode == 1
    assert "Kafka exited with code 1 while starting" in result.stderr
    assert "node ID not found" in result.stderr  # the broker's own reason, from its log
    assert "delete" in result.stderr and "--data-dir" in result.stderr


def test_storage_formats_when_the_random_cluster_id_starts_with_a_dash(tmp_path, monkeypatch):
    """One cluster id in 64 starts with "-"; Kafka's storage tool must not take it for an option."""
    broker = LocalKafka(load_settings(kafka_port=free_port_pair(), data_dir=tmp_path))
    broker.data_dir.mkdir(parents=True)
    broker._config_file.write_text(broker._server_properties())
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(bytes=b"\xfb" + b"\x01" * 15))
    broker._format_storage(find_java(), broker.fetch_jars())
    assert "cluster.id=-wEB" in (broker.data_dir / "logs" / "meta.properties").read_text()
