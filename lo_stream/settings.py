"""Settings: the one place for every default (topics, ports, directories, the broker).

Values come, highest priority first, from keyword arguments, ``LO_STREAM_*`` environment
variables, and an optional TOML file named by ``LO_STREAM_SETTINGS_FILE`` (or the CLI's
``--settings``). Example::

    >>> from lo_stream.settings import Settings
    >>> Settings(topic_prefix="study1").topics.events
    'study1.events'
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["ENV_PREFIX", "SETTINGS_FILE_ENV", "Settings", "SettingsError", "TopicNames", "load_settings"]

ENV_PREFIX = "LO_STREAM_"
SETTINGS_FILE_ENV = f"{ENV_PREFIX}SETTINGS_FILE"


class SettingsError(ValueError):
    """A setting has a value lo_stream cannot use; the message names it and the fix."""


class TopicNames(BaseModel):
    """The Kafka topics of one deployment, all under the same prefix."""

    events: str
    dead_letters: str
    rosters: str
    courses: str
    audit: str
    versions: str
    cluster: str


class Settings(BaseSettings):
    """How one lo_stream deployment is wired: broker, topics, storage and servers."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    # Kafka
    broker: str = Field(
        default="",
        description="Bootstrap servers, 'host:port[,host:port...]' (a 'kafka://' prefix is accepted). "
        "Empty means the embedded broker on 127.0.0.1:<kafka_port>.",
    )
    topic_prefix: str = Field(default="lo_stream", pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(default=4, ge=1, description="Partitions of the events topic and of every table.")
    replication_factor: int = Field(default=1, ge=1)
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once",
        description="exactly_once makes table writes and offset commits one Kafka transaction.",
    )

    # The engine (docs/engine.md; the defaults are what bench.throughput measured best)
    worker_id: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._:-]*$",
        description="This worker's stable name in its consumer group (Kafka static membership): a worker "
        "restarted with the same id takes its partitions back at once. Empty: <host name>-<worker_port>.",
    )
    batch_max_records: int = Field(default=20000, ge=1, description="Messages the engine takes per fetch, at most.")
    fold_max_events: int = Field(
        default=1000, ge=1,
        description="Events of messages of several events folded at once: a fetch is decoded and folded in parts, "
        "each ending with the message that brings it to this many such events, so that a part's objects are folded "
        "and freed while they are in the CPU's caches (a key's entry is read and written once per part).",
    )
    fold_max_messages: int = Field(
        default=20000, ge=1,
        description="Messages folded at once, at most: a part also ends with its this-many-th message, so that a "
        "student's events sent one per message meet in one part (their entry read and written once for all).",
    )
    commit_interval: float = Field(
        default=0.5, gt=0, le=60,
        description="Seconds between commits: stores written, offsets committed (exactly-once: transactions).",
    )
    fetch_max_bytes: int = Field(default=52_428_800, ge=1024, description="Bytes one fetch brings, at most.")
    fetch_partition_max_bytes: int = Field(default=4_194_304, ge=1024, description="Bytes per partition per fetch.")
    changelog_linger_ms: int = Field(
        default=5, ge=0, description="How long changelog records and forwarded events wait to fill a produce batch."
    )
    session_timeout_ms: int = Field(
        default=10_000, ge=1000,
        description="How long a worker that died keeps its partitions (unless restarted with its worker_id).",
    )

    # What the workers run
    modules: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_.,\s-]*$",
        description="Comma-separated names of the installed modules a worker runs (see `lo-stream modules`). "
        "Empty: every installed module.",
    )

    # Where state lives
    data_dir: Path = Field(default=Path("~/.local/share/lo_stream"), description="Tables and the embedded broker.")
    cache_dir: Path = Field(default=Path("~/.cache/lo_stream"), description="Downloaded Kafka jars.")
    table_memory_mb: int = Field(
        default=32, ge=4,
        description="Memory of one table partition's store at most: half RocksDB write buffers, three eighths "
        "block cache, an eighth the values it wrote last (answering reads without RocksDB). "
        "A worker holds one per table per partition it serves (active or standby).",
    )

    # The embedded broker (`lo-stream kafka start`)
    kafka_version: str = Field(default="4.4.0", pattern=r"^[0-9][0-9A-Za-z.+-]*$")
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    kafka_controller_port: int = Field(default=0, ge=0, le=65535, description="0 means kafka_port + 1.")
    kafka_heap: str = Field(default="1g", pattern=r"^[0-9]+[kKmMgG]$")
    kafka_start_timeout: float = Field(default=90.0, gt=0)

    # Servers (all bound to bind_host)
    bind_host: str = "127.0.0.1"
    worker_port: int = Field(default=6066, ge=1, le=65535)
    gateway_port: int = Field(default=8888, ge=1, le=65535)
    dashboard_port: int = Field(default=5006, ge=1, le=65535)

    # The ingest gateway (`lo-stream gateway`)
    gateway_tokens_file: Path | None = Field(
        default=None,
        description="Client tokens (hashed), managed with `lo-stream tokens`. Default: <data_dir>/gateway-tokens.json.",
    )
    gateway_insecure_identity: bool = Field(
        default=False,
        description="Development only: accept the unauthenticated 'test_framework_fake_identity' event.",
    )
    gateway_max_event_bytes: int = Field(default=256 * 1024, ge=1024, description="Largest event (one frame) accepted.")
    gateway_max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Largest POST /api/events body.")
    gateway_max_held_events: int = Field(
        default=10_000, ge=1, description="Events a websocket may send before authenticating (held, then delivered)."
    )
    gateway_max_held_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Bytes of events a websocket may send before authenticating."
    )
    gateway_max_unauthenticated_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024,
        description="Bytes of events held for all websockets not yet authenticated, together.",
    )
    gateway_max_unauthenticated_connections: int = Field(
        default=1000, ge=1, description="Websockets open at once that have not authenticated yet."
    )
    gateway_auth_timeout_s: float = Field(
        default=60.0, gt=0, description="A websocket not authenticated after this long is closed (held events dead-lettered)."
    )

    # Replay and reducer versions (`lo-stream replay`)
    build_lane: str = Field(
        default="",
        pattern=r"^$|^[A-Za-z0-9_.]+@[0-9]+$",
        description="REDUCER@VERSION: run this worker as the build lane of one reducer version, in its own "
        "consumer group (lo-stream replay --as-version sets it; leave it empty otherwise).",
    )

    # The query layer (served by every worker on worker_port)
    users_file: Path | None = Field(
        default=None,
        description="Teachers and admins (lo-stream users). Default: <data_dir>/users.json.",
    )
    query_allow_client_dags: bool = Field(
        default=False, description="Let callers send whole query DAGs, not only the modules' named exports."
    )
    cluster_secret: str = Field(
        default="",
        description="Shared by a deployment's workers to read each other's tables. Empty: the deployment makes "
        "its own, kept in the <prefix>.cluster topic.",
    )

    # The dashboards (`lo-stream dashboard`)
    query_url: str = Field(default="", description="A worker's query API. Empty: http://<bind_host>:<worker_port>.")
    dashboard_token: str = Field(
        default="",
        description="The dashboard server's admin token for the query API. Empty: it makes itself one in the "
        "users file (which the workers must share).",
    )
    dashboard_cookie_secret: str = Field(
        default="", description="Signs login cookies. Empty: a new one each start (everyone signs in again)."
    )

    _embedded_broker: bool = PrivateAttr(default=False)

    @field_validator("broker")
    @classmethod
    def _strip_scheme(cls, value: str) -> str:
        servers = [s.strip().removeprefix("kafka://") for s in value.replace(";", ",").split(",") if s.strip()]
        for server in servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not 'host:port' (example: 127.0.0.1:9092)")
        return ",".join(servers)

    @field_validator("data_dir", "cache_dir", "gateway_tokens_file", "users_file")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _derive_defaults(self) -> "Settings":
        if not self.broker:
            self._embedded_broker = True
            self.broker = f"127.0.0.1:{self.kafka_port}"
        if not self.kafka_controller_port:
            self.kafka_controller_port = self.kafka_port + 1
        if self.gateway_tokens_file is None:
            self.gateway_tokens_file = self.data_dir / "gateway-tokens.json"
        if self.users_file is None:
            self.users_file = self.data_dir / "users.json"
        if not self.query_url:
            self.query_url = f"http://{self.bind_host}:{self.worker_port}"
        return self

    @property
    def embedded_broker(self) -> bool:
        """True when no broker was configured: lo_stream's own (`lo-stream kafka start`) is meant."""
        return self._embedded_broker

    @property
    def bootstrap_servers(self) -> list[str]:
        """The broker as aiokafka wants it."""
        return self.broker.split(",")

    @property
    def group_instance_id(self) -> str:
        """This worker's static member id: `worker_id`, or the host name and the worker's port."""
        return self.worker_id or f"{socket.gethostname()}-{self.worker_port}"

    @property
    def topics(self) -> TopicNames:
        prefix = self.topic_prefix
        return TopicNames(
            events=f"{prefix}.events",
            dead_letters=f"{prefix}.dead-letters",
            rosters=f"{prefix}.rosters",
            courses=f"{prefix}.courses",
            audit=f"{prefix}.audit",
            versions=f"{prefix}.versions",
            cluster=f"{prefix}.cluster",
        )

    @property
    def module_names(self) -> list[str]:
        """The modules named by `modules`, in order; empty means every installed module."""
        return [name.strip() for name in self.modules.split(",") if name.strip()]

    @property
    def app_id(self) -> str:
        """Names the workers' consumer group and the tables' changelog topics."""
        return self.topic_prefix

    def as_env(self) -> dict[str, str]:
        """These settings as ``LO_STREAM_*`` variables, to hand to a child process."""
        return {
            f"{ENV_PREFIX}{name.upper()}": str(value)
            for name, value in self.model_dump().items()
            if value is not None  # unset: the child derives the same default
        }

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        settings_file = os.environ.get(SETTINGS_FILE_ENV)
        if settings_file:
            path = Path(settings_file).expanduser()
            if not path.is_file():
                raise SettingsError(
                    f"settings file {path} (from {SETTINGS_FILE_ENV}) does not exist: "
                    "create it or unset the variable"
                )
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning validation errors into one readable `SettingsError`.

    >>> load_settings(partitions=8).partitions
    8
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            where = f"{ENV_PREFIX}{name.upper()}" if name in Settings.model_fields else name
            problems.append(f"{where}={error.get('input')!r}: {error['msg']}")
        raise SettingsError(
            "invalid lo_stream settings (environment, settings file or arguments):\n  "
            + "\n  ".join(problems)
        ) from None
