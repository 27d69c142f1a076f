"""Fixtures: one real Kafka broker per test session, and per-test settings with their own topics."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from lo_stream.connectors.local_kafka import LocalKafka
from lo_stream.settings import Settings, load_settings
from tests.support import free_port, free_port_pair


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real broker: LO_STREAM_BROKER if set, else an embedded one for this session."""
    configured = os.environ.get("LO_STREAM_BROKER")
    if configured:
        yield load_settings().broker
        return
    broker = LocalKafka(
        load_settings(kafka_port=free_port_pair(), data_dir=tmp_path_factory.mktemp("lo-data")),
    )
    status = broker.start()
    try:
        yield status.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings for one test: the session's broker, topics under a fresh prefix, a private data dir."""
    return load_settings(
        broker=kafka_bootstrap,
        topic_prefix=f"test-{uuid.uuid4().hex[:12]}",
        data_dir=tmp_path / "data",
        worker_port=free_port(),
    )


@pytest.fixture
def sample_module() -> Iterator[str]:
    """`pip install -e` the test suite's module (tests/sample_module) for one test, then remove it."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    source = Path(__file__).parent / "sample_module"
    subprocess.run([*pip, "install", "--no-deps", "-e", str(source)], check=True, timeout=300)
    try:
        yield "lo_sample"
    finally:
        subprocess.run([*pip, "uninstall", "--yes", "lo-sample-module"], check=True, timeout=120)
