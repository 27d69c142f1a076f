"""Settings: one place for every default, overridable from LO_STREAM_* variables and a TOML file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from lo_stream.reducers import ReducerRegistry, student_event_reducer
from lo_stream.settings import SETTINGS_FILE_ENV, Settings, SettingsError, load_settings
from lo_stream.tables.store import StoreMemory, Table
from tests.support import lo_stream_command

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in [n for n in os.environ if n.startswith("LO_STREAM_")]:
        monkeypatch.delenv(name)


def test_defaults_derive_from_one_place():
    settings = load_settings()
    assert settings.broker == "127.0.0.1:9092"
    assert settings.kafka_controller_port == 9093
    assert settings.topics.events == "lo_stream.events"
    assert settings.topics.dead_letters == "lo_stream.dead-letters"
    assert settings.topics.rosters == "lo_stream.rosters"
    assert settings.topics.courses == "lo_stream.courses"
    assert settings.gateway_tokens_file == settings.data_dir / "gateway-tokens.json"
    assert settings.gateway_insecure_identity is False  # production default: authentication required
    assert settings.app_id == "lo_stream"


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("LO_STREAM_TOPIC_PREFIX", "study7")
    monkeypatch.setenv("LO_STREAM_PARTITIONS", "12")
    monkeypatch.setenv("LO_STREAM_KAFKA_PORT", "19092")
    monkeypatch.setenv("LO_STREAM_DASHBOARD_PORT", "5100")
    settings = load_settings()
    assert settings.topics.events == "study7.events"
    assert settings.partitions == 12
    assert settings.broker == "127.0.0.1:19092"  # the embedded broker follows its port
    assert settings.kafka_controller_port == 19093
    assert settings.dashboard_port == 5100


def test_broker_accepts_kafka_urls_and_lists():
    assert load_settings().embedded_broker
    settings = load_settings(broker="kafka://k1:9092;kafka://k2:9093")
    assert not settings.embedded_broker
    assert settings.bootstrap_servers == ["k1:9092", "k2:9093"]


def test_settings_file_is_read_and_the_environment_wins(tmp_path, monkeypatch):
    settings_file = tmp_path / "lo_stream.toml"
    settings_file.write_text('topic_prefix = "from-file"\npartitions = 6\ndata_dir = "/srv/lo_stream"\n')
    monkeypatch.setenv(SETTINGS_FILE_ENV, str(settings_file))
    monkeypatch.setenv("LO_STREAM_PARTITIONS", "8")
    settings_file.write_text(settings_file.read_text() + 'broker = "kafka.school.example:9092"\n')
    settings = load_settings()
    assert not settings.embedded_broker  # `make run` starts no broker of its own
    assert settings.topic_prefix == "from-file"
    assert str(settings.data_dir) == "/srv/lo_stream"
    assert settings.partitions == 8


def test_missing_settings_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(SETTINGS_FILE_ENV, str(tmp_path / "nope.toml"))
    with pytest.raises(SettingsError, match="nope.toml .* does not exist"):
        load_settings()


def test_unknown_key_in_settings_file_is_named(tmp_path, monkeypatch):
    settings_file = tmp_path / "lo_stream.toml"
    settings_file.write_text("partitons = 3\n")
    monkeypatch.setenv(SETTINGS_FILE_ENV, str(settings_file))
    with pytest.raises(SettingsError, match="partitons=3: Extra inputs are not permitted"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LO_STREAM_PARTITIONS", "many", "LO_STREAM_PARTITIONS='many'"),
        ("LO_STREAM_PARTITIONS", "0", "greater than or equal to 1"),
        ("LO_STREAM_BROKER", "localhost", "is not 'host:port'"),
        ("LO_STREAM_TOPIC_PREFIX", "my topics", "LO_STREAM_TOPIC_PREFIX='my topics'"),
        ("LO_STREAM_KAFKA_PORT", "70000", "LO_STREAM_KAFKA_PORT"),
        ("LO_STREAM_TABLE_MEMORY_MB", "2", "greater than or equal to 4"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert message in str(error.value)


def test_settings_pass_to_a_child_process_unchanged(monkeypatch):
    original = load_settings(topic_prefix="child", partitions=3, kafka_port=20000, worker_port=7000)
    for name, value in original.as_env().items():
        monkeypatch.setenv(name, value)
    assert Settings().model_dump() == original.model_dump()


def test_cli_reports_bad_settings_without_a_traceback(tmp_path):
    env = {"PATH": os.environ["PATH"], "LO_STREAM_PARTITIONS": "many"}
    result = lo_stream_command("kafka", "status", env=env)
    assert result.returncode == 1
    assert "invalid lo_stream settings" in result.stderr and "LO_STREAM_PARTITIONS='many'" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_settings_option_reads_the_file(tmp_path):
    settings_file = tmp_path / "lo_stream.toml"
    settings_file.write_text(f'data_dir = "{tmp_path / "elsewhere"}"\n')
    env = {"PATH": os.environ["PATH"]}
    result = lo_stream_command("--settings", str(settings_file), "kafka", "status", env=env)
    assert result.returncode == 3
    assert str(tmp_path / "elsewhere" / "kafka") in result.stdout


def test_compose_file_matches_the_embedded_broker():
    """Docker users get the same Kafka version on the same port as `lo-stream kafka start`."""
    compose = yaml.safe_load((REPO / "docker-compose.kafka.yml").read_text())
    kafka = compose["services"]["kafka"]
    defaults = load_settings()
    assert kafka["image"] == f"apache/kafka:{defaults.kafka_version}"
    assert f"127.0.0.1:{defaults.kafka_port}:9092" in kafka["ports"]
    assert kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{defaults.broker}"


registry = ReducerRegistry()


@student_event_reducer(null_state={"count": 0}, registry=registry)
def count(event, state):
    return {"count": state["count"] + 1}


def test_table_memory_bounds_the_rocksdb_of_each_table_partition(tmp_path):
    settings = load_settings(data_dir=tmp_path, table_memory_mb=64)
    memory = StoreMemory.of(settings)
    megabyte = 1024 * 1024
    assert memory == (16 * megabyte, 2, 24 * megabyte, 4 * megabyte)  # RocksDB as Faust set it: 64 MB, 3 and 2 GB
    table = Table(settings, next(iter(registry)), tmp_path / "tables")
    store = table.open(0)  # RocksDB takes them
    assert store.db.property_int_value("rocksdb.block-cache-capacity") == 24 * megabyte
    store.write({"s1": b"{}"}, checkpoint=7)
    assert (store.get("s1"), store.checkpoint) == (b"{}", 7)
    table.close_all()
